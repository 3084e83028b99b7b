// SPDX-License-Identifier: MPL-2.0
//! What `gst-inspect-1.0` shows: every element of the plugin has a long description, and every
//! property of its own says what it does, with its default (or that it is read-only).

mod common;

use gst::prelude::*;

#[test]
fn every_property_is_documented_with_its_default() {
    common::init();
    let plugin = gst::Registry::get()
        .find_plugin("videoai")
        .expect("videoai registered");
    let features = gst::Registry::get().features_by_plugin("videoai");
    let mut elements = 0;
    let mut undocumented = Vec::new();
    for f in features {
        let Ok(factory) = f.downcast::<gst::ElementFactory>() else {
            continue;
        };
        elements += 1;
        let name = factory.name();
        let long = factory
            .metadata(gst::ELEMENT_METADATA_DESCRIPTION)
            .unwrap_or("");
        assert!(long.len() >= 80, "{name}: description too short: {long}");
        let el = factory.create().build().unwrap();
        let mut objects: Vec<glib::Object> = vec![el.clone().upcast()];
        // Request pads with properties of their own (framesync's sink_%u).
        for templ in el.pad_template_list() {
            if templ.presence() == gst::PadPresence::Request
                && let Some(pad) = el.request_pad_simple(templ.name_template())
            {
                objects.push(pad.upcast());
            }
        }
        for obj in objects {
            let own = obj.type_();
            for p in obj.list_properties() {
                if p.owner_type() != own {
                    continue; // inherited (name, qos, sync, …): documented by GStreamer
                }
                let blurb = p.blurb().unwrap_or("");
                let read_only = !p.flags().contains(glib::ParamFlags::WRITABLE);
                let ok = blurb.len() >= 20
                    && (blurb.contains("Default") || (read_only && blurb.contains("ead-only")));
                if !ok {
                    undocumented.push(format!("{name}::{}: {blurb:?}", p.name()));
                }
            }
        }
    }
    assert_eq!(
        elements, 7,
        "adaptivequeue, detectionoverlay, framesplit, framesync, onnxinfer, raftsink, resilientsrc"
    );
    assert!(undocumented.is_empty(), "{undocumented:#?}");
    assert!(plugin.description().contains("videoai"));
    // The tracer is there too.
    assert!(
        gst::Registry::get()
            .lookup_feature("videoaitrace")
            .is_some_and(|f| f.is::<gst::TracerFactory>())
    );
}
