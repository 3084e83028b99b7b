// SPDX-License-Identifier: MPL-2.0
//! Whether a stream comes from a live source, decided by the source itself.
//!
//! The LATENCY query is not the answer: any element that paces buffers (`identity sync=true`,
//! a `clocksync`) answers it as live, although the frames still come from a file and keep their
//! file positions. So the elements that need to know (`raftsink` numbers live frames by capture
//! time, files by position) walk upstream to the elements that produce the data (elements
//! without sink pads, looking through bins and ghost pads) and ask them: a `GstBaseSrc` (and
//! `appsrc`) says `is_live()`, other sources their `is-live` property; only a source that says
//! neither is asked the LATENCY query.

use gst::prelude::*;
use gst_base::prelude::*;

/// The most pads visited; pipelines are far smaller.
const MAX_PADS: usize = 512;

/// Whether the data arriving at `sink_pad` comes from a live source: `Some(true)` when any
/// source upstream is live, `Some(false)` when sources were found and none is, `None` when no
/// source is linked (yet).
pub fn upstream_is_live(sink_pad: &gst::Pad) -> Option<bool> {
    let mut todo: Vec<gst::Pad> = sink_pad.peer().into_iter().collect();
    let mut seen: Vec<gst::Pad> = Vec::new();
    let mut found = None;
    while let Some(pad) = todo.pop() {
        if seen.len() >= MAX_PADS || seen.contains(&pad) {
            continue;
        }
        seen.push(pad.clone());
        // A bin's source ghost pad: the data comes from its target, inside the bin.
        if let Some(ghost) = pad.downcast_ref::<gst::GhostPad>() {
            if let Some(target) = ghost.target() {
                todo.push(target);
            }
            continue;
        }
        // The inside of a bin's sink ghost pad: the data comes from outside the bin.
        if let Some(ghost) = pad.parent().and_downcast::<gst::GhostPad>() {
            if let Some(peer) = ghost.peer() {
                todo.push(peer);
            }
            continue;
        }
        let Some(element) = pad.parent_element() else {
            continue;
        };
        let sinks = element.sink_pads();
        if sinks.is_empty() {
            let live = source_is_live(&element, &pad);
            if live {
                return Some(true);
            }
            found = Some(false);
            continue;
        }
        todo.extend(sinks.iter().filter_map(|p| p.peer()));
    }
    found
}

fn source_is_live(element: &gst::Element, pad: &gst::Pad) -> bool {
    if let Some(src) = element.downcast_ref::<gst_base::BaseSrc>() {
        return src.is_live();
    }
    if element
        .find_property("is-live")
        .is_some_and(|p| p.value_type() == bool::static_type())
    {
        return element.property::<bool>("is-live");
    }
    let mut q = gst::query::Latency::new();
    pad.query(&mut q) && q.result().0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(desc: &str) -> Option<bool> {
        gst::init().unwrap();
        let p = gst::parse::launch(desc)
            .unwrap()
            .downcast::<gst::Pipeline>()
            .unwrap();
        upstream_is_live(&p.by_name("s").unwrap().static_pad("sink").unwrap())
    }

    #[test]
    fn the_source_decides() {
        assert_eq!(
            live("videotestsrc ! identity sync=true ! fakesink name=s"),
            Some(false),
            "a paced file-like source is not live"
        );
        assert_eq!(
            live("videotestsrc is-live=true ! queue ! fakesink name=s"),
            Some(true)
        );
        // Through a bin's ghost pads.
        let p = gst::Pipeline::new();
        let bin =
            gst::parse::bin_from_description("videotestsrc is-live=true ! identity", true).unwrap();
        let sink = gst::ElementFactory::make("fakesink").build().unwrap();
        p.add_many([bin.upcast_ref(), &sink]).unwrap();
        bin.link(&sink).unwrap();
        assert_eq!(
            upstream_is_live(&sink.static_pad("sink").unwrap()),
            Some(true)
        );
        assert_eq!(
            live(
                "videotestsrc ! compositor name=c ! fakesink name=s  videotestsrc is-live=true ! c."
            ),
            Some(true),
            "any live input makes the stream live"
        );
        let alone = gst::ElementFactory::make("fakesink").build().unwrap();
        assert_eq!(upstream_is_live(&alone.static_pad("sink").unwrap()), None);
    }
}
