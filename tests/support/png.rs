//! A minimal PNG reader for screenshots: 8-bit RGB or RGBA, not interlaced (what headless
//! Chromium writes), inflated with `flate2`, the five scanline filters undone.

use std::io::Read;

/// A decoded image: `width × height` pixels, RGB.
#[derive(Debug, Clone)]
pub struct Image {
    pub width: usize,
    pub height: usize,
    pub rgb: Vec<[u8; 3]>,
}

impl Image {
    /// The pixel at (`x`, `y`).
    pub fn at(&self, x: usize, y: usize) -> [u8; 3] {
        self.rgb[y * self.width + x]
    }
}

fn be32(b: &[u8]) -> usize {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize
}

fn paeth(a: u8, b: u8, c: u8) -> u8 {
    let (a16, b16, c16) = (i16::from(a), i16::from(b), i16::from(c));
    let p = a16 + b16 - c16;
    let (pa, pb, pc) = ((p - a16).abs(), (p - b16).abs(), (p - c16).abs());
    if pa <= pb && pa <= pc {
        a
    } else if pb <= pc {
        b
    } else {
        c
    }
}

/// Decodes `png`, or says what it does not handle.
pub fn decode(png: &[u8]) -> Result<Image, String> {
    const MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";
    let mut rest = png.strip_prefix(MAGIC).ok_or("not a PNG")?;
    let (mut width, mut height, mut channels) = (0, 0, 0);
    let mut idat = Vec::new();
    while rest.len() >= 12 {
        let len = be32(rest);
        let kind = &rest[4..8];
        let data = rest.get(8..8 + len).ok_or("truncated chunk")?;
        match kind {
            b"IHDR" => {
                width = be32(&data[0..]);
                height = be32(&data[4..]);
                let (depth, color, interlace) = (data[8], data[9], data[12]);
                channels = match (depth, color, interlace) {
                    (8, 2, 0) => 3,
                    (8, 6, 0) => 4,
                    _ => return Err(format!("depth {depth} color {color} interlace {interlace}")),
                };
            }
            b"IDAT" => idat.extend_from_slice(data),
            b"IEND" => break,
            _ => {}
        }
        rest = &rest[12 + len..];
    }
    let mut raw = Vec::new();
    flate2::read::ZlibDecoder::new(&idat[..])
        .read_to_end(&mut raw)
        .map_err(|e| format!("inflate: {e}"))?;
    let stride = width * channels;
    if raw.len() < height * (stride + 1) {
        return Err(format!("{} bytes for {width}×{height}", raw.len()));
    }
    let mut prev = vec![0u8; stride];
    let mut rgb = Vec::with_capacity(width * height);
    for y in 0..height {
        let line = &raw[y * (stride + 1)..(y + 1) * (stride + 1)];
        let (filter, src) = (line[0], &line[1..]);
        let mut cur = vec![0u8; stride];
        for i in 0..stride {
            let a = if i >= channels { cur[i - channels] } else { 0 };
            let (b, c) = (prev[i], if i >= channels { prev[i - channels] } else { 0 });
            let pred = match filter {
                0 => 0,
                1 => a,
                2 => b,
                3 => ((u16::from(a) + u16::from(b)) / 2) as u8,
                4 => paeth(a, b, c),
                f => return Err(format!("filter {f}")),
            };
            cur[i] = src[i].wrapping_add(pred);
        }
        rgb.extend(cur.chunks(channels).map(|p| [p[0], p[1], p[2]]));
        prev = cur;
    }
    Ok(Image { width, height, rgb })
}
