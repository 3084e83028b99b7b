// SPDX-License-Identifier: MPL-2.0
//! What the preprocessor is asked for, in numbers: the tensor (size, layout, element type,
//! channel order, normalisation) and where the picture lands in it (letterbox or stretch,
//! anchor, rounding), for the whole frame or a region.

/// Order of the three colour channels in the tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelOrder {
    Rgb,
    Bgr,
}

/// Memory layout of one tensor entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `[N, 3, H, W]`
    Nchw,
    /// `[N, H, W, 3]`
    Nhwc,
}

/// Where the scaled picture sits in a letterboxed tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Anchor {
    TopLeft,
    Center,
}

/// How a letterboxed picture's size is made whole, as each family's reference preprocessing
/// does: ultralytics (YOLOv5/v8) rounds (`int(round(w * r))`), YOLOX truncates (`int(w * r)`).
/// At 1366×768 into 416×416 that is 234 rows against 233.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rounding {
    Round,
    Truncate,
}

/// How the frame is fitted to the tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fit {
    /// Keep the aspect ratio, pad the rest.
    Letterbox(Anchor, Rounding),
    /// Scale each axis independently to fill the tensor.
    Stretch,
}

/// Element type of the tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Elem {
    F32,
    U8,
}

/// What the model expects as input (one entry of the batch).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TensorSpec {
    pub width: usize,
    pub height: usize,
    pub layout: Layout,
    pub order: ChannelOrder,
    pub elem: Elem,
    /// f32 only: `value = ((pixel × scale) − mean) / std`, per tensor channel.
    pub scale: f32,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    /// Value of the letterbox padding, 0..=255, before normalisation.
    pub pad_value: u8,
    pub fit: Fit,
}

impl TensorSpec {
    /// Elements in one entry.
    pub fn entry_len(&self) -> usize {
        self.width * self.height * 3
    }

    /// Shape of a tensor of `batch` entries.
    pub fn shape(&self, batch: usize) -> [usize; 4] {
        match self.layout {
            Layout::Nchw => [batch, 3, self.height, self.width],
            Layout::Nhwc => [batch, self.height, self.width, 3],
        }
    }
}

/// A rectangle of the frame, in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rect {
    pub x: usize,
    pub y: usize,
    pub w: usize,
    pub h: usize,
}

/// Where a source rectangle landed in the tensor, and the way back to frame pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Placement {
    /// Tensor pixels per source pixel, per axis.
    pub scale_x: f64,
    pub scale_y: f64,
    /// Top-left corner of the picture in the tensor.
    pub offset_x: usize,
    pub offset_y: usize,
    /// Size of the picture in the tensor.
    pub width: usize,
    pub height: usize,
    /// The source rectangle in frame pixels.
    pub source: Rect,
}

impl Placement {
    pub fn new(source: Rect, tensor_width: usize, tensor_height: usize, fit: Fit) -> Self {
        let (sw, sh) = (source.w.max(1), source.h.max(1));
        match fit {
            Fit::Stretch => Placement {
                scale_x: tensor_width as f64 / sw as f64,
                scale_y: tensor_height as f64 / sh as f64,
                offset_x: 0,
                offset_y: 0,
                width: tensor_width,
                height: tensor_height,
                source,
            },
            Fit::Letterbox(anchor, rounding) => {
                let r = f64::min(
                    tensor_width as f64 / sw as f64,
                    tensor_height as f64 / sh as f64,
                );
                let whole = |v: f64| match rounding {
                    Rounding::Round => v.round() as usize,
                    Rounding::Truncate => v as usize,
                };
                let width = whole(sw as f64 * r).clamp(1, tensor_width);
                let height = whole(sh as f64 * r).clamp(1, tensor_height);
                let (offset_x, offset_y) = match anchor {
                    Anchor::TopLeft => (0, 0),
                    Anchor::Center => ((tensor_width - width) / 2, (tensor_height - height) / 2),
                };
                Placement {
                    scale_x: width as f64 / sw as f64,
                    scale_y: height as f64 / sh as f64,
                    offset_x,
                    offset_y,
                    width,
                    height,
                    source,
                }
            }
        }
    }

    /// Maps a point from tensor coordinates to frame coordinates, clamped to the source
    /// rectangle.
    #[inline]
    pub fn to_frame(&self, x: f32, y: f32) -> (f64, f64) {
        let fx = (x as f64 - self.offset_x as f64) / self.scale_x;
        let fy = (y as f64 - self.offset_y as f64) / self.scale_y;
        (
            self.source.x as f64 + fx.clamp(0.0, self.source.w as f64),
            self.source.y as f64 + fy.clamp(0.0, self.source.h as f64),
        )
    }
}
