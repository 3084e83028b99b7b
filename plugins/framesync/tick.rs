// SPDX-License-Identifier: MPL-2.0
//! What a tick needs of the sink pads: the tick rate, the tolerance, and each pad's view
//! (index, frame period, clock-offset correction) for one `aggregate` call.

use gst::prelude::*;
use gst::subclass::prelude::*;

use super::settings::{MAX_FPS, MAX_TOLERANCE, Settings};

/// Tick rate when neither `framerate` nor any input's caps give one.
const FALLBACK_FPS: (i32, i32) = (30, 1);

/// A frame period (ns) from a frame rate, at least 1 ms; `None` for no rate (0/1, variable).
pub(super) fn period_of(fps: gst::Fraction) -> Option<i64> {
    (fps.numer() > 0 && fps.denom() > 0)
        .then(|| (1_000_000_000i64 * fps.denom() as i64 / fps.numer() as i64).max(1_000_000))
}

/// A sink pad and what `aggregate` needs of it for one tick.
pub(super) struct PadView {
    pub(super) pad: super::FrameSyncPad,
    pub(super) index: u32,
    /// Added to the pad's frame times (clock-offset correction).
    pub(super) correction: i64,
    pub(super) period: Option<i64>,
}

/// The tick rate: `framerate`, else the fastest input's, else 30/1.
pub(super) fn tick_rate(settings: &Settings, pads: &[PadView]) -> gst::Fraction {
    if period_of(settings.framerate).is_some() {
        return settings.framerate;
    }
    let mut best: Option<gst::Fraction> = None;
    for p in pads {
        let st = p.pad.imp().state.lock().unwrap();
        let fps = st
            .caps
            .as_ref()
            .and_then(|c| c.structure(0))
            .and_then(|s| s.get::<gst::Fraction>("framerate").ok())
            .filter(|f| period_of(*f).is_some())
            .map(|f| f.min(gst::Fraction::new(MAX_FPS, 1)));
        if let Some(f) = fps
            && best.is_none_or(|b| f > b)
        {
            best = Some(f);
        }
    }
    best.unwrap_or(gst::Fraction::new(FALLBACK_FPS.0, FALLBACK_FPS.1))
}

/// The tolerance (ns): the setting, else half the tick period.
pub(super) fn tolerance(settings: &Settings, views: &[PadView]) -> i64 {
    match settings.tolerance {
        0 => period_of(tick_rate(settings, views)).unwrap_or(1_000_000_000 / 30) / 2,
        t => t.min(MAX_TOLERANCE) as i64,
    }
}

/// The sink pads, by index, with their clock-offset corrections.
pub(super) fn pad_views(element: &super::FrameSync, settings: &Settings) -> Vec<PadView> {
    let mut views: Vec<PadView> = element
        .sink_pads()
        .into_iter()
        .filter_map(|p| p.downcast::<super::FrameSyncPad>().ok())
        .map(|pad| {
            let (offset, period) = {
                let st = pad.imp().state.lock().unwrap();
                (st.offset.offset(), st.period.map(|p| p as i64))
            };
            PadView {
                index: pad.imp().index(),
                pad,
                correction: offset.unwrap_or(0),
                period,
            }
        })
        .collect();
    views.sort_by_key(|v| v.index);
    // Offsets relative to the first pad that has one; only applied when asked for.
    let reference = views.iter().find_map(|v| {
        v.pad
            .imp()
            .state
            .lock()
            .unwrap()
            .offset
            .offset()
            .map(|_| v.correction)
    });
    for v in &mut views {
        v.correction = match reference {
            Some(r) if settings.drift_correction => v.correction - r,
            _ => 0,
        };
    }
    views
}
