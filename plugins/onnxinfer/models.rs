// SPDX-License-Identifier: MPL-2.0
//! The models `onnxinfer` runs, and their replacement while playing.
//!
//! * [`Loader`] (held by the element, usable from any thread without the streaming lock): a
//!   model set while playing is loaded and warmed up on a thread of its own; the result waits
//!   in `pending` until the streaming thread takes it. A newer request for the same role makes
//!   an older one obsolete (generations).
//! * [`Models`] (streaming thread): the primary engine and the canary's, switching in what the
//!   loader has ready between two frames ([`Models::apply`]) and saying what happened as
//!   [`Event`]s for the element to report. A model taken out of use is dropped on a thread of
//!   its own ([`crate::util::retire`]): a session's teardown (a GPU one especially) can take long, and the
//!   streaming thread does not wait for it.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::engine::{Engine, Overrides};
use super::model::Model;

/// Which model position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Primary = 0,
    Canary = 1,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Canary => "canary",
        }
    }
}

/// A load that finished, waiting to be switched in (`model: None` removes the canary).
struct Pending {
    role: Role,
    generation: u64,
    path: PathBuf,
    model: Option<Model>,
}

#[derive(Default)]
struct Shared {
    pending: Mutex<Vec<Pending>>,
    has_pending: AtomicBool,
    /// Newest request per role; loads of older generations are discarded.
    generation: [AtomicU64; 2],
}

/// Loads models off the streaming thread.
#[derive(Default, Clone)]
pub struct Loader {
    shared: Arc<Shared>,
}

impl Loader {
    /// Starts a new run (or ends one): loads still under way become obsolete.
    pub fn reset(&self) {
        for g in &self.shared.generation {
            g.fetch_add(1, Ordering::SeqCst);
        }
        self.shared.pending.lock().unwrap().clear();
        self.shared.has_pending.store(false, Ordering::SeqCst);
    }

    /// Whether `generation` is still the newest request for `role`.
    pub fn is_current(&self, role: Role, generation: u64) -> bool {
        self.shared.generation[role as usize].load(Ordering::SeqCst) == generation
    }

    /// Loads `path` for `role` on a thread of its own with `load` (`None`: remove the canary);
    /// `refused` is called (on that thread) with the generation and the reason when the load
    /// fails. Returns the request's generation, and with it an error when no thread could be
    /// started (the request is then refused at once).
    pub fn request(
        &self,
        role: Role,
        path: Option<PathBuf>,
        load: impl FnOnce(&std::path::Path) -> Result<Model, String> + Send + 'static,
        refused: impl FnOnce(u64, String) + Send + 'static,
    ) -> (u64, Result<(), String>) {
        let generation = self.shared.generation[role as usize].fetch_add(1, Ordering::SeqCst) + 1;
        let Some(path) = path else {
            self.hand_over(Pending {
                role,
                generation,
                path: PathBuf::new(),
                model: None,
            });
            return (generation, Ok(()));
        };
        let me = self.clone();
        let spawned = std::thread::Builder::new()
            .name("onnxinfer-load".into())
            .spawn(move || match load(&path) {
                Ok(model) => me.hand_over(Pending {
                    role,
                    generation,
                    path,
                    model: Some(model),
                }),
                Err(why) => refused(generation, why),
            });
        (
            generation,
            spawned
                .map(|_| ())
                .map_err(|e| format!("cannot start a loader thread: {e}")),
        )
    }

    fn hand_over(&self, p: Pending) {
        if !self.is_current(p.role, p.generation) {
            return;
        }
        self.shared.pending.lock().unwrap().push(p);
        self.shared.has_pending.store(true, Ordering::Release);
    }

    /// The loads that finished and are still wanted.
    fn take_ready(&self) -> Vec<Pending> {
        if !self.shared.has_pending.swap(false, Ordering::Acquire) {
            return Vec::new();
        }
        let ready = std::mem::take(&mut *self.shared.pending.lock().unwrap());
        ready
            .into_iter()
            .filter(|p| self.is_current(p.role, p.generation))
            .collect()
    }
}

/// What [`Models::apply`] did, for the element to report.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Switched {
        role: Role,
        id: String,
        path: PathBuf,
    },
    /// The model loaded but cannot take this stream's frames; the running one stays.
    Refused {
        role: Role,
        generation: u64,
        path: PathBuf,
        why: String,
    },
    CanaryRemoved,
}

/// The engines in use (streaming thread).
pub struct Models {
    pub primary: Engine,
    pub canary: Option<Engine>,
    overrides: Overrides,
    threads: usize,
}

impl Models {
    pub fn new(
        primary: Model,
        canary: Option<Model>,
        overrides: Overrides,
        threads: usize,
    ) -> Self {
        Models {
            primary: Engine::new(Arc::new(primary), overrides.clone(), threads),
            canary: canary.map(|c| Engine::new(Arc::new(c), overrides.clone(), threads)),
            overrides,
            threads,
        }
    }

    /// The engine of `role` (the primary when there is no canary).
    pub fn engine(&mut self, canary: bool) -> &mut Engine {
        match (&mut self.canary, canary) {
            (Some(c), true) => c,
            _ => &mut self.primary,
        }
    }

    /// The engine of the canary (when `canary` and there is one) or of the primary, to read.
    pub fn engine_ref(&self, canary: bool) -> &Engine {
        match (&self.canary, canary) {
            (Some(c), true) => c,
            _ => &self.primary,
        }
    }

    /// Takes the canary out of use; returns its id.
    pub fn remove_canary(&mut self) -> Option<String> {
        let engine = self.canary.take()?;
        let id = engine.model.id.clone();
        crate::util::retire::retire(engine);
        Some(id)
    }

    /// Switches in what `loader` has ready. A model that cannot take frames of `info` (the
    /// negotiated video, when there is one) is refused.
    pub fn apply(&mut self, loader: &Loader, info: Option<&gst_video::VideoInfo>) -> Vec<Event> {
        let mut events = Vec::new();
        for p in loader.take_ready() {
            let Some(model) = p.model else {
                if self.remove_canary().is_some() {
                    events.push(Event::CanaryRemoved);
                }
                continue;
            };
            let mut engine = Engine::new(Arc::new(model), self.overrides.clone(), self.threads);
            if let Some(info) = info
                && let Err(why) = engine.configure(info)
            {
                crate::util::retire::retire(engine);
                events.push(Event::Refused {
                    role: p.role,
                    generation: p.generation,
                    path: p.path,
                    why,
                });
                continue;
            }
            let id = engine.model.id.clone();
            let old = match p.role {
                Role::Primary => Some(std::mem::replace(&mut self.primary, engine)),
                Role::Canary => self.canary.replace(engine),
            };
            if let Some(old) = old {
                crate::util::retire::retire(old);
            }
            events.push(Event::Switched {
                role: p.role,
                id,
                path: p.path,
            });
        }
        events
    }
}
