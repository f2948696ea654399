//! The sweep plot: throughput (top panel) and latency p50 / p99 (bottom
//! panel) against the swept parameter, as a PNG.
//!
//! Drawn on an RGB canvas with an 8×8 bitmap font and written as a PNG by
//! hand (signature, IHDR, one zlib IDAT, IEND; CRC-32 per chunk), so the
//! plot costs two tiny crates, not a graphics stack.
//!
//! ```text
//!  ┌──────────────────────────────┐
//!  │ title                        │
//!  │ entries/s  ●──●──●──●        │  linear y from 0, log2 x
//!  │ latency ms ●──●──●  (p50)    │
//!  │            ○──○──○  (p99)    │
//!  │            x values          │
//!  └──────────────────────────────┘
//! ```

use std::io;
use std::path::Path;

/// One point of a sweep.
#[derive(Clone, Copy, Debug)]
pub struct Point {
    /// The swept parameter's value.
    pub load: f64,
    /// Entries per second.
    pub throughput: f64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
}

const WIDTH: usize = 900;
const HEIGHT: usize = 640;
const LEFT: usize = 110;
const RIGHT: usize = 30;
const WHITE: [u8; 3] = [255, 255, 255];
const BLACK: [u8; 3] = [0, 0, 0];
const GREY: [u8; 3] = [220, 220, 220];
const BLUE: [u8; 3] = [31, 119, 180];
const ORANGE: [u8; 3] = [230, 110, 20];
const RED: [u8; 3] = [200, 30, 30];

/// An RGB canvas.
struct Canvas {
    pixels: Vec<u8>,
}

impl Canvas {
    fn new() -> Self {
        Self {
            pixels: WHITE.repeat(WIDTH * HEIGHT),
        }
    }

    fn set(&mut self, x: i64, y: i64, color: [u8; 3]) {
        if x >= 0 && y >= 0 && (x as usize) < WIDTH && (y as usize) < HEIGHT {
            let at = (y as usize * WIDTH + x as usize) * 3;
            self.pixels[at..at + 3].copy_from_slice(&color);
        }
    }

    /// A line, two pixels thick (Bresenham).
    fn line(&mut self, from: (i64, i64), to: (i64, i64), color: [u8; 3]) {
        let (mut x, mut y) = from;
        let dx = (to.0 - x).abs();
        let dy = -(to.1 - y).abs();
        let step_x = if x < to.0 { 1 } else { -1 };
        let step_y = if y < to.1 { 1 } else { -1 };
        let mut error = dx + dy;
        loop {
            self.set(x, y, color);
            self.set(x + 1, y, color);
            self.set(x, y + 1, color);
            if x == to.0 && y == to.1 {
                break;
            }
            let doubled = 2 * error;
            if doubled >= dy {
                error += dy;
                x += step_x;
            }
            if doubled <= dx {
                error += dx;
                y += step_y;
            }
        }
    }

    fn dot(&mut self, center: (i64, i64), color: [u8; 3], filled: bool) {
        for dy in -4i64..=4 {
            for dx in -4i64..=4 {
                let distance = dx * dx + dy * dy;
                if distance <= 16 && (filled || distance >= 9) {
                    self.set(center.0 + dx, center.1 + dy, color);
                }
            }
        }
    }

    /// Text in the 8×8 font; `scale` 1 or 2.
    fn text(&mut self, x: i64, y: i64, text: &str, color: [u8; 3], scale: i64) {
        for (position, character) in text.chars().enumerate() {
            let glyph = font8x8::legacy::BASIC_LEGACY
                .get(character as usize)
                .copied()
                .unwrap_or([0; 8]);
            let left = x + position as i64 * 8 * scale;
            for (row, bits) in glyph.iter().enumerate() {
                for column in 0..8 {
                    if bits & (1 << column) != 0 {
                        for sy in 0..scale {
                            for sx in 0..scale {
                                self.set(
                                    left + column * scale + sx,
                                    y + row as i64 * scale + sy,
                                    color,
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}

/// A panel's placement and scales.
struct Panel {
    top: usize,
    bottom: usize,
    y_max: f64,
    x_min: f64,
    x_max: f64,
}

impl Panel {
    fn x(&self, load: f64) -> i64 {
        let span = (self.x_max.log2() - self.x_min.log2()).max(1e-9);
        let fraction = if self.x_max > self.x_min {
            (load.log2() - self.x_min.log2()) / span
        } else {
            0.5
        };
        (LEFT as f64 + fraction * (WIDTH - LEFT - RIGHT) as f64).round() as i64
    }

    fn y(&self, value: f64) -> i64 {
        let fraction = (value / self.y_max).clamp(0.0, 1.0);
        (self.bottom as f64 - fraction * (self.bottom - self.top) as f64).round() as i64
    }

    fn frame(&self, canvas: &mut Canvas, label: &str, unit_format: &dyn Fn(f64) -> String) {
        for tick in 0..=4 {
            let value = self.y_max * f64::from(tick) / 4.0;
            let y = self.y(value);
            canvas.line((LEFT as i64, y), ((WIDTH - RIGHT) as i64, y), GREY);
            let text = unit_format(value);
            canvas.text(
                LEFT as i64 - 8 - 8 * text.len() as i64,
                y - 4,
                &text,
                BLACK,
                1,
            );
        }
        canvas.line(
            (LEFT as i64, self.top as i64),
            (LEFT as i64, self.bottom as i64),
            BLACK,
        );
        canvas.line(
            (LEFT as i64, self.bottom as i64),
            ((WIDTH - RIGHT) as i64, self.bottom as i64),
            BLACK,
        );
        canvas.text(LEFT as i64 + 8, self.top as i64 - 14, label, BLACK, 1);
    }
}

/// Draws the sweep and writes it to `path` as a PNG.
pub fn write(path: &Path, title: &str, parameter: &str, points: &[Point]) -> io::Result<()> {
    std::fs::write(path, render(title, parameter, points))
}

/// The PNG bytes of the plot.
pub fn render(title: &str, parameter: &str, points: &[Point]) -> Vec<u8> {
    let mut canvas = Canvas::new();
    canvas.text(LEFT as i64, 14, title, BLACK, 2);
    let x_min = points.iter().map(|p| p.load).fold(f64::INFINITY, f64::min);
    let x_max = points.iter().map(|p| p.load).fold(0.0, f64::max);
    let (x_min, x_max) = if points.is_empty() {
        (1.0, 2.0)
    } else {
        (x_min.max(1e-9), x_max.max(1e-9))
    };
    let throughput = Panel {
        top: 70,
        bottom: 300,
        y_max: nice_ceiling(points.iter().map(|p| p.throughput).fold(0.0, f64::max)),
        x_min,
        x_max,
    };
    let latency = Panel {
        top: 350,
        bottom: 580,
        y_max: nice_ceiling(points.iter().map(|p| p.p99_ms).fold(0.0, f64::max)),
        x_min,
        x_max,
    };
    throughput.frame(&mut canvas, "throughput, entries/s", &|value| short(value));
    latency.frame(
        &mut canvas,
        "latency, ms:  p50 (filled)   p99 (open)",
        &|value| short(value),
    );
    series(
        &mut canvas,
        &throughput,
        points,
        |p| p.throughput,
        BLUE,
        true,
    );
    series(&mut canvas, &latency, points, |p| p.p50_ms, ORANGE, true);
    series(&mut canvas, &latency, points, |p| p.p99_ms, RED, false);
    for point in points {
        let text = short(point.load);
        let x = latency.x(point.load) - 4 * text.len() as i64;
        canvas.text(x, latency.bottom as i64 + 10, &text, BLACK, 1);
    }
    let caption = format!("{parameter} (log scale)");
    canvas.text(
        (WIDTH / 2) as i64 - 4 * caption.len() as i64,
        (HEIGHT - 26) as i64,
        &caption,
        BLACK,
        1,
    );
    encode_png(&canvas.pixels, WIDTH, HEIGHT)
}

fn series(
    canvas: &mut Canvas,
    panel: &Panel,
    points: &[Point],
    value: impl Fn(&Point) -> f64,
    color: [u8; 3],
    filled: bool,
) {
    let mut sorted: Vec<&Point> = points.iter().collect();
    sorted.sort_by(|a, b| a.load.total_cmp(&b.load));
    let at = |point: &Point| (panel.x(point.load), panel.y(value(point)));
    for pair in sorted.windows(2) {
        canvas.line(at(pair[0]), at(pair[1]), color);
    }
    for point in sorted {
        canvas.dot(at(point), color, filled);
    }
}

/// 1, 2 or 5 times a power of ten, at least `value`.
fn nice_ceiling(value: f64) -> f64 {
    if value <= 0.0 || !value.is_finite() {
        return 1.0;
    }
    let power = 10f64.powf(value.log10().floor());
    [1.0, 2.0, 4.0, 5.0, 10.0]
        .iter()
        .map(|step| step * power)
        .find(|candidate| *candidate >= value)
        .unwrap_or(10.0 * power)
}

/// 1500 → "1.5k", 2000000 → "2M", 0.25 → "0.25".
fn short(value: f64) -> String {
    let (scaled, suffix) = if value >= 1e6 {
        (value / 1e6, "M")
    } else if value >= 1e3 {
        (value / 1e3, "k")
    } else {
        (value, "")
    };
    let text = if scaled >= 100.0 || scaled.fract() == 0.0 {
        format!("{scaled:.0}")
    } else if scaled >= 10.0 {
        format!("{scaled:.1}")
    } else {
        format!("{scaled:.2}")
    };
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        text
    };
    format!("{text}{suffix}")
}

/// A PNG of 8-bit RGB `pixels` (row-major, no padding).
pub fn encode_png(pixels: &[u8], width: usize, height: usize) -> Vec<u8> {
    assert_eq!(
        pixels.len(),
        width * height * 3,
        "RGB pixels of the given size"
    );
    let mut raw = Vec::with_capacity(pixels.len() + height);
    for row in pixels.chunks_exact(width * 3) {
        raw.push(0); // filter: none
        raw.extend_from_slice(row);
    }
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut header = Vec::with_capacity(13);
    header.extend_from_slice(&(width as u32).to_be_bytes());
    header.extend_from_slice(&(height as u32).to_be_bytes());
    header.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit, RGB, deflate, no filter, no interlace
    chunk(&mut png, *b"IHDR", &header);
    chunk(
        &mut png,
        *b"IDAT",
        &miniz_oxide::deflate::compress_to_vec_zlib(&raw, 6),
    );
    chunk(&mut png, *b"IEND", &[]);
    png
}

fn chunk(png: &mut Vec<u8>, kind: [u8; 4], data: &[u8]) {
    png.extend_from_slice(&(data.len() as u32).to_be_bytes());
    png.extend_from_slice(&kind);
    png.extend_from_slice(data);
    let mut crc = Crc32::default();
    crc.update(&kind);
    crc.update(data);
    png.extend_from_slice(&crc.finish().to_be_bytes());
}

/// CRC-32 (IEEE 802.3, as PNG chunks use; not the CRC32C of our frames).
struct Crc32 {
    state: u32,
}

impl Default for Crc32 {
    fn default() -> Self {
        Self { state: !0 }
    }
}

impl Crc32 {
    fn update(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.state ^= u32::from(*byte);
            for _ in 0..8 {
                let mask = (self.state & 1).wrapping_neg();
                self.state = (self.state >> 1) ^ (0xedb8_8320 & mask);
            }
        }
    }

    fn finish(&self) -> u32 {
        !self.state
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CRC matches the standard check value, and a PNG starts with the
    /// signature and an IHDR of the right size and ends with IEND.
    #[test]
    fn png_is_well_formed() {
        let mut crc = Crc32::default();
        crc.update(b"123456789");
        assert_eq!(crc.finish(), 0xcbf4_3926);
        let png = encode_png(&[0u8; 2 * 3 * 3], 2, 3);
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        assert_eq!(&png[12..16], b"IHDR");
        assert_eq!(u32::from_be_bytes(png[16..20].try_into().unwrap()), 2);
        assert_eq!(&png[png.len() - 8..png.len() - 4], b"IEND");
    }

    /// Axis labels are short and round.
    #[test]
    fn labels_are_short() {
        assert_eq!(short(1500.0), "1.5k");
        assert_eq!(short(2_000_000.0), "2M");
        assert_eq!(short(0.25), "0.25");
        assert_eq!(short(64.0), "64");
        assert!((nice_ceiling(730.0) - 1000.0).abs() < 1e-9);
        assert!((nice_ceiling(130.0) - 200.0).abs() < 1e-9);
    }
}
