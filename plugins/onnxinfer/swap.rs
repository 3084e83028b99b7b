// SPDX-License-Identifier: MPL-2.0
//! Models changed while the element runs, and the canary's fate: loading a model set while
//! PLAYING on the loader's thread (warmed up with the current frame size), refusing one that
//! fails (a warning, and the location property put back to the model that keeps running),
//! reporting switches, and switching the canary off when it fails. [`Swaps`] owns what this
//! needs (the loader, the models running, the frame size) and shares the element's settings
//! and statistics; the streaming thread switches loaded models in ([`Models::apply`]).
//!
//! Lock order (the element's): `settings`, then `stats`, then `running` and `warm_info`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use gst::glib;
use gst::prelude::*;

use super::CAT;
use super::model::{Family, Model, ModelError};
use super::models::{Event, Loader, Models, Role};
use super::settings::Settings;
use super::stats::Stats;

/// Model swaps of one element.
pub struct Swaps {
    element: OnceLock<glib::WeakRef<gst::Element>>,
    settings: Arc<Mutex<Settings>>,
    stats: Arc<Mutex<Stats>>,
    pub loader: Loader,
    /// The paths of the models in use (primary, canary), for a refused swap to put back.
    running: Mutex<[Option<PathBuf>; 2]>,
    /// The negotiated video, for warming up a model loaded while playing.
    warm_info: Mutex<Option<gst_video::VideoInfo>>,
}

impl Swaps {
    pub fn new(settings: Arc<Mutex<Settings>>, stats: Arc<Mutex<Stats>>) -> Self {
        Swaps {
            element: OnceLock::new(),
            settings,
            stats,
            loader: Loader::default(),
            running: Mutex::new([None, None]),
            warm_info: Mutex::new(None),
        }
    }

    /// The element warnings and messages are posted on (set once, when it is constructed).
    pub fn set_element(&self, element: &gst::Element) {
        let _ = self.element.set(element.downgrade());
    }

    fn element(&self) -> Option<gst::Element> {
        self.element.get()?.upgrade()
    }

    /// The models running from now on (at start).
    pub fn set_running(&self, running: [Option<PathBuf>; 2]) {
        *self.running.lock().unwrap() = running;
    }

    /// The frame size new models are warmed up with (`None`: no warm-up).
    pub fn set_warm_info(&self, info: Option<gst_video::VideoInfo>) {
        *self.warm_info.lock().unwrap() = info;
    }

    /// Warns when the model does not run where it was asked to (`provider-fallback`).
    pub fn check_provider(&self, settings: &Settings, model: &Model) {
        let Some(el) = self.element() else {
            return;
        };
        if model.provider != settings.execution_provider {
            gst::element_warning!(
                el,
                gst::LibraryError::Settings,
                (
                    "execution provider {:?} is not available; running {} on the CPU (provider-fallback=true)",
                    settings.execution_provider,
                    model.id
                )
            );
        }
    }

    /// Loads `path` for `role` on another thread; the streaming thread switches it in before
    /// the next buffer. A model that fails is refused with a warning and the current one stays.
    pub fn request_load(self: &Arc<Self>, role: Role, path: Option<PathBuf>) {
        let settings = self.settings.lock().unwrap().clone();
        let info = self.warm_info.lock().unwrap().clone();
        let weak = Arc::downgrade(self);
        let weak_refused = weak.clone();
        let shown = path.clone().unwrap_or_default();
        if let Some(p) = &path {
            gst::info!(
                CAT,
                "loading {} model {} in the background",
                role.name(),
                p.display()
            );
        }
        let load = move |path: &std::path::Path| -> Result<Model, String> {
            let model = load_model(&settings, role, path).map_err(|e| e.to_string())?;
            // Warm up with the current frame size, so the switch costs no first-run delay.
            if let Some(info) = &info {
                let spec = super::engine::tensor_spec(
                    &model,
                    &settings.overrides(),
                    info.width() as usize,
                    info.height() as usize,
                )?;
                model
                    .warm_up(&spec)
                    .map_err(|e| format!("warm-up failed: {e}"))?;
            }
            if let Some(swaps) = weak.upgrade() {
                swaps.check_provider(&settings, &model);
            }
            Ok(model)
        };
        let refused_path = shown.clone();
        let (generation, started) = self.loader.request(role, path, load, move |g, why| {
            if let Some(swaps) = weak_refused.upgrade() {
                swaps.refuse(role, g, &refused_path, &why);
            }
        });
        if let Err(why) = started {
            self.refuse(role, generation, &shown, &why);
        }
    }

    /// A model asked for while running could not be used: warn, keep the current one and put
    /// the location property back to it. Takes no streaming lock.
    fn refuse(&self, role: Role, generation: u64, path: &Path, why: &str) {
        self.stats.lock().unwrap().swaps_refused += 1;
        let Some(el) = self.element() else {
            return;
        };
        gst::element_warning!(
            el,
            gst::ResourceError::Settings,
            (
                "refusing new {} model '{}': {why}. The current model keeps running",
                role.name(),
                path.display()
            )
        );
        if !self.loader.is_current(role, generation) {
            return;
        }
        let current = self.running.lock().unwrap()[role as usize].clone();
        {
            let mut settings = self.settings.lock().unwrap();
            match role {
                Role::Primary => settings.model_location = current,
                Role::Canary => settings.canary_model_location = current,
            }
        }
        el.notify(match role {
            Role::Primary => "model-location",
            Role::Canary => "canary-model-location",
        });
    }

    /// Reports what switching models did.
    pub fn report(&self, events: Vec<Event>) {
        for e in events {
            match e {
                Event::Switched { role, id, path } => {
                    gst::info!(CAT, "switched {} model to {id}", role.name());
                    self.running.lock().unwrap()[role as usize] = Some(path);
                    let mut stats = self.stats.lock().unwrap();
                    stats.swaps += 1;
                    match role {
                        Role::Primary => stats.primary = Some(id),
                        Role::Canary => {
                            stats.canary = Some(id);
                            stats.canary_disabled = None;
                        }
                    }
                }
                Event::Refused {
                    role,
                    generation,
                    path,
                    why,
                } => self.refuse(role, generation, &path, &why),
                Event::CanaryRemoved => {
                    gst::info!(CAT, "canary removed");
                    self.running.lock().unwrap()[Role::Canary as usize] = None;
                    self.stats.lock().unwrap().canary = None;
                }
            }
        }
    }

    /// Loads the models `settings` name at start: the primary must load; a canary that does
    /// not is switched off (production goes on). From then on they are the running ones.
    pub fn start(
        &self,
        settings: &Settings,
        primary_path: &Path,
    ) -> Result<(Model, Option<Model>), ModelError> {
        let primary = load_model(settings, Role::Primary, primary_path)?;
        self.check_provider(settings, &primary);
        let canary_path = settings.canary_model_location.as_ref();
        let canary = canary_path.and_then(|p| match load_model(settings, Role::Canary, p) {
            Ok(m) => {
                self.check_provider(settings, &m);
                Some(m)
            }
            Err(e) => {
                self.disable_canary(None, &p.display().to_string(), &e.to_string());
                None
            }
        });
        self.loader.reset();
        self.set_running([
            Some(primary_path.to_path_buf()),
            canary_path.filter(|_| canary.is_some()).cloned(),
        ]);
        let mut stats = self.stats.lock().unwrap();
        stats.primary = Some(primary.id.clone());
        stats.canary = canary.as_ref().map(|c| c.id.clone());
        Ok((primary, canary))
    }

    /// The canary failed (`why`): it is switched off, production goes on. Says so in a
    /// warning, an `onnxinfer-canary-disabled` element message and `stats`.
    pub fn disable_canary(&self, models: Option<&mut Models>, what: &str, why: &str) {
        if let Some(m) = models {
            m.remove_canary();
        }
        self.running.lock().unwrap()[Role::Canary as usize] = None;
        {
            let mut stats = self.stats.lock().unwrap();
            stats.canary = None;
            stats.canary_disabled = Some(why.to_string());
        }
        let Some(el) = self.element() else {
            return;
        };
        gst::element_warning!(
            el,
            gst::LibraryError::Failed,
            ("canary model {what} switched off, the primary model goes on: {why}")
        );
        let s = gst::Structure::builder("onnxinfer-canary-disabled")
            .field("model", what)
            .field("reason", why)
            .build();
        let _ = el.post_message(gst::message::Element::builder(s).src(&el).build());
    }

    /// The running canary failed on frames (`why`): switched off.
    pub fn canary_failed(&self, models: &mut Models, why: &str) {
        let what = models
            .canary
            .as_ref()
            .map(|c| c.model.id.clone())
            .unwrap_or_default();
        self.disable_canary(Some(models), &what, why);
    }
}

/// Loads a model for `role` with `settings` and checks it fits them.
pub fn load_model(settings: &Settings, role: Role, path: &Path) -> Result<Model, ModelError> {
    let model_type = settings.model_type(role);
    let model = Model::load(path, &settings.load_options(model_type))?;
    if settings.roi_only && model.family != Family::Classifier {
        return Err(ModelError::Unsupported(format!(
            "roi-only classifies upstream regions and needs a classifier model; '{}' is a {} model. Set model-type=classifier or roi-only=false",
            path.display(),
            model.family.name()
        )));
    }
    gst::info!(
        CAT,
        "loaded {} model {} from {}: family {} (model-type {:?}), input {:?}, outputs {:?}, provider {:?}",
        role.name(),
        model.id,
        path.display(),
        model.family.name(),
        model_type,
        model.input,
        model.output_shapes,
        model.provider
    );
    Ok(model)
}
