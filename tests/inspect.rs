// SPDX-License-Identifier: MPL-2.0
//! What `gst-inspect-1.0` shows: every element of the plugin has a long description, and every
//! property of its own says what it does, with its default (or that it is read-only).

mod common;

use gst::prelude::*;

/// The element and one pad of each request template (framesync's sink_%u has properties of
/// its own).
fn with_request_pads(el: &gst::Element) -> Vec<glib::Object> {
    let mut objects: Vec<glib::Object> = vec![el.clone().upcast()];
    for templ in el.pad_template_list() {
        if templ.presence() == gst::PadPresence::Request
            && let Some(pad) = el.request_pad_simple(templ.name_template())
        {
            objects.push(pad.upcast());
        }
    }
    objects
}

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
        for obj in with_request_pads(&el) {
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
        elements, 10,
        "adaptivequeue, cliprecorder, detectionoverlay, framesplit, framesync, motiondetect, objecttracker, onnxinfer, raftsink, resilientsrc"
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

/// The default a blurb states ("… Default: X"), as written: up to the end, or to the first
/// '.', ';' or ',' followed by a space, or an opening parenthesis.
fn stated_default(blurb: &str) -> Option<&str> {
    let at = blurb.rfind("Default: ")? + "Default: ".len();
    let rest = &blurb[at..];
    let end = [". ", "; ", ", ", " (", " — "]
        .iter()
        .filter_map(|s| rest.find(s))
        .min()
        .unwrap_or(rest.len());
    Some(rest[..end].trim_end_matches('.').trim())
}

/// Whether `stated` (from a blurb) says `value`: numbers compare as numbers (a unit after the
/// number is allowed), enums by nick, strings as written ("none" for no string).
fn says(stated: &str, value: &glib::Value) -> bool {
    let first = stated.split_whitespace().next().unwrap_or("");
    let number = |v: f64| {
        first
            .replace('_', "")
            .parse::<f64>()
            .is_ok_and(|s| (s - v).abs() <= 1e-9 * v.abs().max(1.0))
            || (first == "none" && (v == u64::MAX as f64 || v == -1.0))
    };
    if let Ok(b) = value.get::<bool>() {
        return stated == b.to_string();
    }
    if let Ok(v) = value.get::<u32>() {
        return number(v as f64);
    }
    if let Ok(v) = value.get::<i32>() {
        return number(v as f64);
    }
    if let Ok(v) = value.get::<u64>() {
        return number(v as f64);
    }
    if let Ok(v) = value.get::<i64>() {
        return number(v as f64);
    }
    if let Ok(v) = value.get::<f64>() {
        return number(v);
    }
    if let Ok(v) = value.get::<f32>() {
        return number(v as f64);
    }
    if let Ok(f) = value.get::<gst::Fraction>() {
        return first == format!("{}/{}", f.numer(), f.denom());
    }
    if let Some((_, v)) = glib::EnumValue::from_value(value) {
        return first == v.nick();
    }
    if let Ok(s) = value.get::<Option<String>>() {
        return match s {
            None => first == "none",
            Some(s) => stated.trim_matches(|c| c == '\'' || c == '"' || c == '`') == s,
        };
    }
    if let Ok(a) = value.get::<gst::Array>() {
        let shown: Vec<String> = a
            .iter()
            .map(|v| {
                v.get::<f64>()
                    .map(|x| x.to_string())
                    .unwrap_or_else(|_| format!("{v:?}"))
            })
            .collect();
        return (a.is_empty() && (first == "none" || first == "empty"))
            || stated.replace(' ', "") == format!("<{}>", shown.join(","));
    }
    false
}

#[test]
fn stated_defaults_are_the_real_defaults() {
    common::init();
    let mut wrong = Vec::new();
    let mut checked = 0;
    for f in gst::Registry::get().features_by_plugin("videoai") {
        let Ok(factory) = f.downcast::<gst::ElementFactory>() else {
            continue;
        };
        let el = factory.create().build().unwrap();
        let objects = with_request_pads(&el);
        for (obj, p) in objects
            .iter()
            .flat_map(|o| o.list_properties().into_iter().map(move |p| (o, p)))
        {
            if p.owner_type() != obj.type_() || !p.flags().contains(glib::ParamFlags::WRITABLE) {
                continue;
            }
            let name = format!("{}::{}", obj.type_().name(), p.name());
            checked += 1;
            let Some(stated) = stated_default(p.blurb().unwrap_or("")) else {
                wrong.push(format!("{name}: no default stated"));
                continue;
            };
            // The value a new element has (what a user gets) and the spec's default (what
            // gst-inspect-1.0 prints): both must be what the blurb says.
            let current = obj.property_value(p.name());
            for (what, v) in [("value", &current), ("spec default", p.default_value())] {
                if !says(stated, v) {
                    wrong.push(format!("{name}: blurb says {stated:?}, {what} is {v:?}"));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    assert!(checked >= 60, "only {checked} writable properties found");
}
