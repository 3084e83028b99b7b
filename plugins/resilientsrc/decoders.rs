// SPDX-License-Identifier: MPL-2.0
//! Video decoder kinds and the preference between them: NVDEC, then VA-API, then the CPU.

use gst::prelude::*;

/// A video decoder's kind, from its factory name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Nvdec,
    Vaapi,
    Cpu,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Nvdec => "nvdec",
            Kind::Vaapi => "vaapi",
            Kind::Cpu => "cpu",
        }
    }
}

/// The kind of decoder `factory` is: NVIDIA (`nvh264dec`, `nvh265dec`, `nvv4l2decoder`, …),
/// VA-API (`vaapih264dec` from gstreamer-vaapi, `vah264dec` from the va plugin) or CPU.
pub fn kind_of(factory: &str) -> Kind {
    let f = factory.to_ascii_lowercase();
    if (f.starts_with("nv") && (f.ends_with("dec") || f.contains("decoder")))
        || f.starts_with("nvv4l2")
    {
        Kind::Nvdec
    } else if (f.starts_with("vaapi") && f.contains("dec"))
        || (f.starts_with("va") && f.ends_with("dec"))
    {
        Kind::Vaapi
    } else {
        Kind::Cpu
    }
}

/// Whether `factory` is a video decoder (by its klass).
pub fn is_video_decoder(factory: &gst::ElementFactory) -> bool {
    let klass = factory.klass();
    klass.contains("Decoder") && klass.contains("Video")
}

/// Video decoder factories of `kind` installed on this machine.
pub fn installed(kind: Kind) -> Vec<String> {
    gst::ElementFactory::factories_with_type(
        gst::ElementFactoryType::DECODER | gst::ElementFactoryType::MEDIA_VIDEO,
        gst::Rank::NONE,
    )
    .iter()
    .filter(|f| is_video_decoder(f))
    .map(|f| f.name().to_string())
    .filter(|n| kind_of(n) == kind)
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds() {
        for n in [
            "nvh264dec",
            "nvh265dec",
            "nvh264sldec",
            "nvv4l2decoder",
            "nvjpegdec",
        ] {
            assert_eq!(kind_of(n), Kind::Nvdec, "{n}");
        }
        for n in ["vaapih264dec", "vah264dec", "vah265dec", "vaapidecodebin"] {
            assert_eq!(kind_of(n), Kind::Vaapi, "{n}");
        }
        for n in [
            "avdec_h264",
            "openh264dec",
            "libde265dec",
            "vp8dec",
            "avdec_vc1",
        ] {
            assert_eq!(kind_of(n), Kind::Cpu, "{n}");
        }
        assert!(Kind::Nvdec < Kind::Vaapi && Kind::Vaapi < Kind::Cpu);
    }
}
