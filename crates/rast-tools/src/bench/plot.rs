//! The sweep plot: throughput (top panel) and latency p50 / p99 (bottom
//! panel) against the swept parameter, written as a PNG and as an SVG side
//! by side.
//!
//! Drawn with `plotters`, so the plot has real axes (tick labels at the
//! swept values, axis descriptions), a legend and anti-aliased text, and the
//! SVG scales and can be diffed or searched as text. Two choices keep it
//! free of system libraries:
//!
//! * no `ttf` feature (font-kit, which wants fontconfig and freetype): text
//!   goes through `ab_glyph` with one font registered from bytes compiled
//!   into the binary, Hack Regular as `epaint_default_fonts` ships it (MIT
//!   and the Bitstream Vera licence). A monospaced font, registered as the
//!   `monospace` family: the SVG names that family, so a viewer that draws
//!   it with its own monospaced font keeps the widths the layout was made
//!   with.
//! * the PNG is encoded by plotters' bitmap backend (the `image` crate),
//!   not by us.
//!
//! The x axis is logarithmic (sweeps double or quadruple their parameter)
//! with a tick at each swept value; the y axes are linear from 0. The
//! throughput panel's one series is named by its y axis; the latency
//! panel has a legend, in the first corner (upper left, upper right, lower
//! right, lower left) that no point falls in.
//!
//! ```text
//!  ┌────────────────────────────────────────────────┐
//!  │                     title                      │
//!  │          ┌──────────────────────────────────┐  │
//!  │ through- │                    ●──────●      │  │  entries/s, 0 up
//!  │ put,     │          ●────────●              │  │
//!  │ entries/s│ ●───────●                        │  │
//!  │          └─┬───────┬────────┬───────┬───────┘  │
//!  │            16      64       256     1024       │  a tick at each swept value
//!  │             parameter (log scale)              │
//!  │          ┌──────────────────────────────────┐  │
//!  │ latency, │ ┌─────────┐                ○     │  │  ms, 0 up
//!  │ ms       │ │─●─ p50  │       ○───────○      │  │  legend: a free corner
//!  │          │ │─○─ p99  │       ●───────●      │  │
//!  │          │ └─────────┘───●────────●         │  │
//!  │          └─┬───────┬────────┬───────┬───────┘  │
//!  │            16      64       256     1024       │
//!  │             parameter (log scale)              │
//!  └────────────────────────────────────────────────┘
//! ```

use std::io;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::coord::combinators::WithKeyPoints;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{FontStyle, register_font};

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

/// The two files one plot is written to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Files {
    /// The bitmap, for a quick look and for embedding in Markdown.
    pub png: PathBuf,
    /// The same drawing as vector graphics with its text as text.
    pub svg: PathBuf,
}

impl Files {
    /// `NAME.png` and `NAME.svg` for `path`: a `.png` or `.svg` extension
    /// on `path` is replaced, any other is kept (`w2.v1` → `w2.v1.png`).
    pub fn beside(path: &Path) -> Self {
        let is_image = path.extension().is_some_and(|extension| {
            extension.eq_ignore_ascii_case("png") || extension.eq_ignore_ascii_case("svg")
        });
        let with = |extension: &str| {
            if is_image {
                path.with_extension(extension)
            } else {
                let mut name = path.as_os_str().to_owned();
                name.push(".");
                name.push(extension);
                PathBuf::from(name)
            }
        };
        Self {
            png: with("png"),
            svg: with("svg"),
        }
    }
}

/// The plot's size in pixels (the SVG's in user units).
pub const SIZE: (u32, u32) = (960, 720);

/// The font family every text of the plot is set in.
const FAMILY: &str = "monospace";
const BLUE: RGBColor = RGBColor(31, 119, 180);
const ORANGE: RGBColor = RGBColor(230, 110, 20);
const RED: RGBColor = RGBColor(200, 30, 30);

/// Draws the sweep and writes it as `NAME.png` and `NAME.svg` (see
/// [`Files::beside`]); `parameter` describes the x axis. Returns the two
/// paths written.
pub fn write(path: &Path, title: &str, parameter: &str, points: &[Point]) -> io::Result<Files> {
    let files = Files::beside(path);
    write_png(&files.png, title, parameter, points)?;
    std::fs::write(&files.svg, svg(title, parameter, points)?)?;
    Ok(files)
}

/// Draws the sweep into a PNG file at `path`.
pub fn write_png(path: &Path, title: &str, parameter: &str, points: &[Point]) -> io::Result<()> {
    register()?;
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    draw(&root, title, parameter, points).map_err(io::Error::other)?;
    root.present().map_err(io::Error::other)
}

/// The sweep as an SVG document.
pub fn svg(title: &str, parameter: &str, points: &[Point]) -> io::Result<String> {
    register()?;
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, SIZE).into_drawing_area();
        draw(&root, title, parameter, points).map_err(io::Error::other)?;
        root.present().map_err(io::Error::other)?;
    }
    Ok(out)
}

/// Registers the embedded font once per process: plotters' `ab_glyph`
/// text has no other source of glyphs, in the bitmap or (for measuring
/// text) in the SVG.
fn register() -> io::Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let registered = *REGISTERED.get_or_init(|| {
        register_font(
            FAMILY,
            FontStyle::Normal,
            epaint_default_fonts::HACK_REGULAR,
        )
        .is_ok()
    });
    if registered {
        Ok(())
    } else {
        Err(io::Error::other("the plot's embedded font did not load"))
    }
}

/// The x axis: log scale over the swept values, a tick at each.
type XAxis = WithKeyPoints<LogCoord<f64>>;

/// The x axis shared by both panels: the swept values (finite, positive,
/// at most 12 of them labelled), widened so the end points' markers are
/// not cut off; a single value gets an octave either side.
fn x_axis(points: &[Point]) -> (f64, f64, Vec<f64>) {
    let mut loads: Vec<f64> = points.iter().map(|point| point.load).collect();
    loads.sort_by(f64::total_cmp);
    loads.dedup();
    let (Some(&low), Some(&high)) = (loads.first(), loads.last()) else {
        return (1.0, 2.0, Vec::new());
    };
    let span = (high / low).log2();
    let pad = if span > 0.0 {
        (span * 0.06).max(0.2)
    } else {
        1.0
    };
    let step = loads.len().div_ceil(12);
    let ticks = loads.iter().copied().step_by(step).collect();
    (low / pad.exp2(), high * pad.exp2(), ticks)
}

/// The points that can be placed: a finite, positive swept value.
fn placeable(points: &[Point]) -> Vec<Point> {
    let mut placeable: Vec<Point> = points
        .iter()
        .filter(|point| point.load.is_finite() && point.load > 0.0)
        .copied()
        .collect();
    placeable.sort_by(|a, b| a.load.total_cmp(&b.load));
    placeable
}

/// One series of a panel.
struct Series {
    /// Its name in the legend.
    label: &'static str,
    color: RGBColor,
    /// A filled marker, or an open one.
    filled: bool,
    /// The y value of a point.
    value: fn(&Point) -> f64,
}

/// Draws the whole plot on `root`.
fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    parameter: &str,
    points: &[Point],
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    root.fill(&WHITE)?;
    let body = root
        .margin(10, 0, 0, 0)
        .titled(title, (FAMILY, 22).into_font().color(&BLACK))?;
    let (top, bottom) = body.split_vertically(SIZE.1 / 2 - 20);
    let points = placeable(points);
    let x_description = format!("{parameter} (log scale)");
    panel(
        &top,
        &points,
        "throughput, entries/s",
        &x_description,
        &[Series {
            label: "throughput",
            color: BLUE,
            filled: true,
            value: |point| point.throughput,
        }],
    )?;
    panel(
        &bottom,
        &points,
        "latency, ms",
        &x_description,
        &[
            Series {
                label: "p50",
                color: ORANGE,
                filled: true,
                value: |point| point.p50_ms,
            },
            Series {
                label: "p99",
                color: RED,
                filled: false,
                value: |point| point.p99_ms,
            },
        ],
    )?;
    Ok(())
}

/// One panel: axes from 0 to a round value above the largest of `series`,
/// a line and a marker per point for each series, a legend when there is
/// more than one series, and "no points" when there are none.
fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    points: &[Point],
    y_description: &str,
    x_description: &str,
    series: &[Series],
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let (low, high, ticks) = x_axis(points);
    let largest = points
        .iter()
        .flat_map(|point| series.iter().map(move |series| (series.value)(point)))
        .filter(|value| value.is_finite())
        .fold(0.0, f64::max);
    let mut chart: ChartContext<'_, DB, Cartesian2d<XAxis, RangedCoordf64>> =
        ChartBuilder::on(area)
            .margin(12)
            .margin_right(28)
            .x_label_area_size(48)
            .y_label_area_size(80)
            .build_cartesian_2d(
                (low..high).log_scale().with_key_points(ticks),
                0.0..nice_ceiling(largest * 1.05),
            )?;
    chart
        .configure_mesh()
        .x_desc(x_description)
        .y_desc(y_description)
        .x_label_formatter(&|value| exact(*value))
        .y_label_formatter(&|value| short(*value))
        .y_labels(6)
        .label_style((FAMILY, 14))
        .axis_desc_style((FAMILY, 15))
        .bold_line_style(BLACK.mix(0.12))
        .light_line_style(BLACK.mix(0.05))
        .y_max_light_lines(2)
        .draw()?;
    for one in series {
        let at: Vec<(f64, f64)> = points
            .iter()
            .map(|point| (point.load, (one.value)(point)))
            .filter(|(_, value)| value.is_finite())
            .collect();
        let line = one.color.stroke_width(2);
        // An open marker is a disc with a white one on top: plotters' bitmap
        // backend draws thick circle outlines ragged.
        let (color, inside) = (one.color, if one.filled { one.color } else { WHITE });
        chart.draw_series(LineSeries::new(at.iter().copied(), line))?;
        chart
            .draw_series(at.iter().map(|&xy| {
                EmptyElement::at(xy)
                    + Circle::new((0, 0), 5, color.filled())
                    + Circle::new((0, 0), 3, inside.filled())
            }))?
            .label(one.label)
            .legend(move |(x, y)| {
                EmptyElement::at((x + 12, y))
                    + PathElement::new(vec![(-12, 0), (12, 0)], line)
                    + Circle::new((0, 0), 5, color.filled())
                    + Circle::new((0, 0), 3, inside.filled())
            });
    }
    if points.is_empty() {
        let area = chart.plotting_area().strip_coord_spec();
        let (width, height) = area.dim_in_pixel();
        area.draw_text(
            "no points",
            &TextStyle::from((FAMILY, 18))
                .color(&BLACK)
                .pos(Pos::new(HPos::Center, VPos::Center)),
            ((width / 2) as i32, (height / 2) as i32),
        )?;
    }
    if series.len() > 1 {
        let (x, y) = (chart.x_range(), chart.y_range());
        let (left, top) = legend_corner(points, series, (x.start, x.end), y.end);
        chart
            .configure_series_labels()
            .position(match (left, top) {
                (true, true) => SeriesLabelPosition::UpperLeft,
                (false, true) => SeriesLabelPosition::UpperRight,
                (false, false) => SeriesLabelPosition::LowerRight,
                (true, false) => SeriesLabelPosition::LowerLeft,
            })
            .label_font((FAMILY, 15))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .draw()?;
    }
    Ok(())
}

/// Where a panel's legend goes, as (left, top): the first corner of upper
/// left, upper right, lower right, lower left with no point of `series` in
/// it (a corner: a quarter of the x axis, on the log scale, by a third of
/// the y axis, about the legend's size), upper left if none is free.
fn legend_corner(points: &[Point], series: &[Series], x: (f64, f64), y_max: f64) -> (bool, bool) {
    let free = |(left, top): (bool, bool)| {
        !points.iter().any(|point| {
            let across = (point.load / x.0).ln() / (x.1 / x.0).ln();
            series.iter().any(|one| {
                let up = (one.value)(point) / y_max;
                (if left { across < 0.25 } else { across > 0.75 })
                    && (if top { up > 0.65 } else { up < 0.35 })
            })
        })
    };
    [(true, true), (false, true), (false, false), (true, false)]
        .into_iter()
        .find(|&corner| free(corner))
        .unwrap_or((true, true))
}

/// A swept value as given (16, 1024, 0.5), or shortened past 99,999.
fn exact(value: f64) -> String {
    if value < 1e5 && (value * 100.0).fract() == 0.0 {
        let text = format!("{value:.2}");
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        short(value)
    }
}

/// 1, 2, 4 or 5 times a power of ten, at least `value`.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn sweep() -> Vec<Point> {
        [
            (16.0, 120_000.0, 0.4, 1.2),
            (64.0, 310_000.0, 0.7, 2.5),
            (256.0, 420_000.0, 2.1, 6.8),
            (1024.0, 440_000.0, 8.0, 21.0),
        ]
        .into_iter()
        .map(|(load, throughput, p50_ms, p99_ms)| Point {
            load,
            throughput,
            p50_ms,
            p99_ms,
        })
        .collect()
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("rast-plot-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Decodes a PNG: its size and its 8-bit RGB pixels.
    fn decode(path: &Path) -> ((u32, u32), Vec<u8>) {
        let decoder = png::Decoder::new(std::fs::File::open(path).unwrap());
        let mut reader = decoder.read_info().unwrap();
        let mut pixels = vec![0; reader.output_buffer_size()];
        let frame = reader.next_frame(&mut pixels).unwrap();
        assert_eq!(frame.color_type, png::ColorType::Rgb);
        assert_eq!(frame.bit_depth, png::BitDepth::Eight);
        pixels.truncate(frame.buffer_size());
        ((frame.width, frame.height), pixels)
    }

    /// Dark pixels (text, axes) in the rows and columns given.
    fn dark(pixels: &[u8], rows: std::ops::Range<u32>, columns: std::ops::Range<u32>) -> usize {
        rows.flat_map(|y| columns.clone().map(move |x| (y * SIZE.0 + x) as usize * 3))
            .filter(|&at| pixels[at..at + 3].iter().all(|&channel| channel < 100))
            .count()
    }

    /// `write` puts a PNG and an SVG side by side, the PNG decodes to the
    /// plot's size, and the title is drawn as glyphs: the band above the
    /// panels has dark pixels with a title and none without one.
    #[test]
    fn png_decodes_and_shows_the_title() {
        let dir = scratch("png");
        let files = write(
            &dir.join("titled.png"),
            "rast bench W2 128 B x1",
            "clients",
            &sweep(),
        )
        .unwrap();
        assert_eq!(files.png, dir.join("titled.png"));
        assert_eq!(files.svg, dir.join("titled.svg"));
        assert!(files.svg.exists());
        let (size, pixels) = decode(&files.png);
        assert_eq!(size, SIZE);
        let band = (0..36, 150..SIZE.0 - 150);
        assert!(dark(&pixels, band.0.clone(), band.1.clone()) > 200);
        // Something is drawn in each panel: axes, tick labels, series.
        assert!(dark(&pixels, 40..SIZE.1 / 2, 0..SIZE.0) > 1000);
        assert!(dark(&pixels, SIZE.1 / 2..SIZE.1, 0..SIZE.0) > 1000);

        let untitled = write(&dir.join("untitled"), "", "clients", &sweep()).unwrap();
        assert_eq!(untitled.png, dir.join("untitled.png"));
        let (_, pixels) = decode(&untitled.png);
        assert_eq!(dark(&pixels, band.0, band.1), 0);
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// The SVG carries its text as text: the title, both axis
    /// descriptions, the legend's series and a tick at each swept value.
    #[test]
    fn svg_has_title_axes_and_legend() {
        let svg = svg(
            "rast bench W2 128 B x1, 3 nodes",
            "in flight per client, 4 clients",
            &sweep(),
        )
        .unwrap();
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        let texts: Vec<&str> = svg
            .split("<text")
            .skip(1)
            .map(|text| {
                let body = &text[text.find('>').unwrap() + 1..];
                body[..body.find("</text>").unwrap()].trim()
            })
            .collect();
        for expected in [
            "rast bench W2 128 B x1, 3 nodes",
            "throughput, entries/s",
            "latency, ms",
            "in flight per client, 4 clients (log scale)",
            "p50",
            "p99",
            "16",
            "64",
            "256",
            "1024",
            "400k",
        ] {
            assert!(texts.contains(&expected), "{expected:?} not in {texts:?}");
        }
        // One legend, in the latency panel: throughput has the y axis.
        assert!(!texts.contains(&"throughput"));
    }

    /// An empty sweep, a single point and unplaceable values draw without
    /// panicking, and say when there is nothing to show.
    #[test]
    fn degenerate_sweeps_draw() {
        let dir = scratch("degenerate");
        let one = &sweep()[..1];
        let odd = [
            Point {
                load: 0.0,
                throughput: 1.0,
                p50_ms: 1.0,
                p99_ms: 1.0,
            },
            Point {
                load: 8.0,
                throughput: f64::NAN,
                p50_ms: f64::INFINITY,
                p99_ms: 3.0,
            },
        ];
        for (name, points) in [("empty", &[][..]), ("one", one), ("odd", &odd[..])] {
            let files = write(&dir.join(name), "title", "clients", points).unwrap();
            assert_eq!(decode(&files.png).0, SIZE);
            let svg = std::fs::read_to_string(&files.svg).unwrap();
            assert_eq!(svg.contains("no points"), points.is_empty(), "{name}");
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// The latency legend goes to the first corner no point is in.
    #[test]
    fn legend_avoids_points() {
        let p99 = [Series {
            label: "p99",
            color: RED,
            filled: false,
            value: |point| point.p99_ms,
        }];
        let at = |load, p99_ms| Point {
            load,
            throughput: 0.0,
            p50_ms: 0.0,
            p99_ms,
        };
        let x = (1.0, 1024.0);
        // Rising latency: upper left is free.
        let rising = [at(2.0, 1.0), at(32.0, 4.0), at(512.0, 9.0)];
        assert_eq!(legend_corner(&rising, &p99, x, 10.0), (true, true));
        // Falling: upper left is taken, upper right is free.
        let falling = [at(2.0, 9.0), at(32.0, 4.0), at(512.0, 1.0)];
        assert_eq!(legend_corner(&falling, &p99, x, 10.0), (false, true));
        // Flat near the top: lower right.
        let flat = [at(2.0, 9.0), at(32.0, 9.0), at(512.0, 9.0)];
        assert_eq!(legend_corner(&flat, &p99, x, 10.0), (false, false));
    }

    /// `NAME.png` and `NAME.svg` whatever extension the path had.
    #[test]
    fn files_sit_side_by_side() {
        let files = |path: &str| {
            let files = Files::beside(Path::new(path));
            (files.png, files.svg)
        };
        let pair = |png: &str, svg: &str| (PathBuf::from(png), PathBuf::from(svg));
        assert_eq!(files("out/w2.png"), pair("out/w2.png", "out/w2.svg"));
        assert_eq!(files("out/w2.SVG"), pair("out/w2.png", "out/w2.svg"));
        assert_eq!(files("w2"), pair("w2.png", "w2.svg"));
        assert_eq!(files("w2.v1"), pair("w2.v1.png", "w2.v1.svg"));
    }

    /// Axis labels are short and round; swept values are shown as given.
    #[test]
    fn labels_are_short() {
        assert_eq!(short(1500.0), "1.5k");
        assert_eq!(short(2_000_000.0), "2M");
        assert_eq!(short(0.25), "0.25");
        assert_eq!(short(64.0), "64");
        assert_eq!(exact(1024.0), "1024");
        assert_eq!(exact(0.5), "0.5");
        assert_eq!(exact(250_000.0), "250k");
        assert!((nice_ceiling(730.0) - 1000.0).abs() < 1e-9);
        assert!((nice_ceiling(130.0) - 200.0).abs() < 1e-9);
        assert!((nice_ceiling(0.0) - 1.0).abs() < 1e-9);
    }
}
