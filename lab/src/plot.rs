//! SVG charts of experiment results.
//!
//! Text is written as SVG `<text>` elements and laid out by whatever renders the file (browser,
//! librsvg, Inkscape). That is why plotters is built without its `ttf` feature: `ttf` pulls in
//! font-kit, which links fontconfig/freetype at build time, and the SVG backend never uses the
//! glyphs anyway; plotters then estimates label widths from character counts, which is plenty
//! for axis labels and a legend.

use std::error::Error;
use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::antientropy::AntiEntropyRow;
use crate::experiments::HopsRow;
use crate::live::{ChurnEventKind, ChurnSlice, LiveChurnRow};
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// Why a chart could not be written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlotError {
    #[error("nothing to plot: the experiment produced no rows")]
    NoRows,
    #[error("cannot draw {path}: {source}")]
    Draw {
        path: PathBuf,
        source: Box<dyn Error + Send + Sync>,
    },
}

const FONT: &str = "sans-serif";

/// Mean hops per lookup against ring size `N` (log2 axis), with each size's p1..p99 range as a
/// whisker and the Chord paper's expectation ½·log2 N as a dashed reference line.
pub fn hops_vs_nodes(path: &Path, rows: &[HopsRow], caption: &str) -> Result<(), PlotError> {
    if rows.is_empty() {
        return Err(PlotError::NoRows);
    }
    draw_hops_vs_nodes(path, rows, caption).map_err(|source| PlotError::Draw {
        path: path.to_path_buf(),
        source,
    })
}

fn draw_hops_vs_nodes(
    path: &Path,
    rows: &[HopsRow],
    caption: &str,
) -> Result<(), Box<dyn Error + Send + Sync>> {
    let log2_nodes: Vec<f64> = rows.iter().map(|row| (row.nodes as f64).log2()).collect();
    let x_min = log2_nodes.iter().copied().fold(f64::INFINITY, f64::min) - 0.5;
    let x_max = log2_nodes.iter().copied().fold(f64::NEG_INFINITY, f64::max) + 0.5;
    let y_max = rows
        .iter()
        .map(|row| {
            f64::from(row.p99_hops)
                .max(row.mean_hops)
                .max(row.half_log2_n)
        })
        .fold(x_max / 2.0, f64::max);
    let y_top = (y_max * 1.15).ceil().max(1.0);

    let root = SVGBackend::new(path, (960, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, (FONT, 24))
        .margin(20)
        .x_label_area_size(55)
        .y_label_area_size(65)
        .build_cartesian_2d(
            Log2Axis {
                linear: (x_min..x_max).into(),
                ticks: log2_nodes.clone(),
            },
            0f64..y_top,
        )?;
    chart
        .configure_mesh()
        .x_desc("ring size N (nodes, log2 scale)")
        .y_desc("hops per lookup")
        .x_label_formatter(&|&x| format!("{}", x.exp2().round()))
        .y_label_formatter(&|y| format!("{y}"))
        .label_style((FONT, 15))
        .axis_desc_style((FONT, 17))
        .light_line_style(WHITE.mix(0.0))
        .draw()?;

    let reference = RED.stroke_width(2);
    chart
        .draw_series(DashedLineSeries::new(
            vec![(x_min, x_min / 2.0), (x_max, x_max / 2.0)],
            10,
            6,
            reference,
        ))?
        .label("½·log2 N (Chord paper)")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], reference));

    let whisker = BLACK.mix(0.6).stroke_width(2);
    let cap = (x_max - x_min) * 0.012;
    chart
        .draw_series(rows.iter().zip(&log2_nodes).flat_map(|(row, &x)| {
            let (low, high) = (f64::from(row.p1_hops), f64::from(row.p99_hops));
            [
                PathElement::new(vec![(x, low), (x, high)], whisker),
                PathElement::new(vec![(x - cap, low), (x + cap, low)], whisker),
                PathElement::new(vec![(x - cap, high), (x + cap, high)], whisker),
            ]
        }))?
        .label("p1 – p99 of hops")
        .legend(move |(x, y)| PathElement::new(vec![(x + 12, y - 7), (x + 12, y + 7)], whisker));

    let mean = BLUE.stroke_width(2);
    // A size where every lookup failed has no mean (NaN); leave a gap rather than a bogus point.
    let means: Vec<(f64, f64)> = rows
        .iter()
        .zip(&log2_nodes)
        .map(|(row, &x)| (x, row.mean_hops))
        .filter(|(_, hops)| hops.is_finite())
        .collect();
    chart
        .draw_series(LineSeries::new(means.clone(), mean).point_size(4))?
        .label("mean hops")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], mean));
    chart.draw_series(means.iter().map(|&(x, hops)| {
        EmptyElement::at((x, hops))
            + Text::new(
                format!("{hops:.2}"),
                (-8, -6),
                (FONT, 14)
                    .into_font()
                    .color(&BLUE)
                    .pos(Pos::new(HPos::Right, VPos::Bottom)),
            )
    }))?;

    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font((FONT, 15))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK.mix(0.4))
        .draw()?;
    root.present()?;
    Ok(())
}

/// Bytes of one anti-entropy round against the number of divergent keys (x at log10(1 + d),
/// ticks at the measured d; y log10), one solid line per key count, the same key count's
/// whole-map baseline as a dashed line in the same colour, and the 1 KiB in-sync target. Lines
/// are labelled at their right end, so the legend only explains the line styles.
pub fn antientropy_bytes(
    path: &Path,
    rows: &[AntiEntropyRow],
    caption: &str,
) -> Result<(), PlotError> {
    if rows.is_empty() {
        return Err(PlotError::NoRows);
    }
    draw_antientropy_bytes(path, rows, caption).map_err(|source| PlotError::Draw {
        path: path.to_path_buf(),
        source,
    })
}

/// Distinguishable on white and for the common colour-vision deficiencies (matplotlib's
/// "tab10" start); further series fall back to plotters' palette.
const SERIES_COLOURS: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
];

fn series_colour(index: usize) -> RGBAColor {
    SERIES_COLOURS.get(index).map_or_else(
        || Palette99::pick(index).to_rgba(),
        |colour| colour.to_rgba(),
    )
}

fn draw_antientropy_bytes(
    path: &Path,
    rows: &[AntiEntropyRow],
    caption: &str,
) -> Result<(), Box<dyn Error + Send + Sync>> {
    const TARGET_BYTES: f64 = 1024.0;
    let position = |divergent: usize| (1.0 + divergent as f64).log10();
    let mut ticks: Vec<f64> = rows.iter().map(|row| position(row.divergent)).collect();
    ticks.sort_by(f64::total_cmp);
    ticks.dedup();
    let (first, last) = (ticks[0], ticks[ticks.len() - 1]);
    let span = (last - first).max(1.0);
    // Room on the right for the line labels.
    let (x_min, x_max) = (first - 0.05 * span, last + 0.3 * span);
    let smallest = rows
        .iter()
        .map(|row| row.bytes_per_round.min(row.baseline_bytes) as f64)
        .fold(TARGET_BYTES, f64::min);
    let largest = rows
        .iter()
        .map(|row| row.bytes_per_round.max(row.baseline_bytes) as f64)
        .fold(TARGET_BYTES, f64::max);

    let root = SVGBackend::new(path, (960, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, (FONT, 22))
        .margin(20)
        .x_label_area_size(55)
        .y_label_area_size(80)
        .build_cartesian_2d(
            Log2Axis {
                linear: (x_min..x_max).into(),
                ticks,
            },
            // Headroom above the highest line for the legend.
            (smallest / 2.0..largest * 20.0).log_scale(),
        )?;
    chart
        .configure_mesh()
        .x_desc("divergent keys d (log scale, 0 included)")
        .y_desc("bytes per round (log scale)")
        .x_label_formatter(&|&x| format!("{}", (10f64.powf(x) - 1.0).round()))
        .y_label_formatter(&|&y| si_bytes(y))
        .label_style((FONT, 15))
        .axis_desc_style((FONT, 17))
        .draw()?;

    let target = BLACK.mix(0.55).stroke_width(1);
    chart
        .draw_series(DashedLineSeries::new(
            vec![(x_min, TARGET_BYTES), (last, TARGET_BYTES)],
            4,
            4,
            target,
        ))?
        .label("1 KiB: in-sync target")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], target));

    let mut key_counts: Vec<usize> = rows.iter().map(|row| row.keys).collect();
    key_counts.sort_unstable();
    key_counts.dedup();
    let label_font = |colour: RGBAColor| {
        (FONT, 14)
            .into_font()
            .color(&colour)
            .pos(Pos::new(HPos::Left, VPos::Center))
    };
    // (end point, text, colour) of each line's label, placed after all lines are drawn.
    let mut labels = Vec::new();
    for (index, &keys) in key_counts.iter().enumerate() {
        let colour = series_colour(index);
        let mut series: Vec<&AntiEntropyRow> = rows.iter().filter(|row| row.keys == keys).collect();
        series.sort_by_key(|row| row.divergent);
        let merkle: Vec<(f64, f64)> = series
            .iter()
            .map(|row| (position(row.divergent), row.bytes_per_round as f64))
            .collect();
        let baseline: Vec<(f64, f64)> = series
            .iter()
            .map(|row| (position(row.divergent), row.baseline_bytes as f64))
            .collect();
        let line = colour.stroke_width(2);
        chart.draw_series(LineSeries::new(merkle.clone(), line).point_size(4))?;
        chart.draw_series(DashedLineSeries::new(baseline.clone(), 8, 5, line))?;
        for end in [merkle.last(), baseline.last()].into_iter().flatten() {
            labels.push((*end, format!("{keys} keys"), colour));
        }
    }
    // Labels of lines that end close together are pushed apart vertically, top to bottom.
    const LABEL_GAP_PX: i32 = 15;
    labels.sort_by_key(|(end, _, _)| chart.backend_coord(end).1);
    let mut next_free = i32::MIN;
    let mut placed = Vec::with_capacity(labels.len());
    for (end, text, colour) in labels {
        let natural = chart.backend_coord(&end).1;
        let at = natural.max(next_free);
        next_free = at + LABEL_GAP_PX;
        placed
            .push(EmptyElement::at(end) + Text::new(text, (10, at - natural), label_font(colour)));
    }
    chart.draw_series(placed)?;

    // The legend explains the styles; the colours are labelled on the lines.
    let style = BLACK.mix(0.8).stroke_width(2);
    chart
        .draw_series(std::iter::empty::<PathElement<(f64, f64)>>())?
        .label("Merkle round (this project)")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], style));
    chart
        .draw_series(std::iter::empty::<PathElement<(f64, f64)>>())?
        .label("whole map every round (original)")
        .legend(move |(x, y)| {
            EmptyElement::at((x, y))
                + PathElement::new(vec![(0, 0), (10, 0)], style)
                + PathElement::new(vec![(14, 0), (24, 0)], style)
        });
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font((FONT, 14))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK.mix(0.4))
        .draw()?;
    root.present()?;
    Ok(())
}

/// `12000` -> `12 kB`: byte counts in decimal units, which is where a log10 axis puts its ticks.
fn si_bytes(bytes: f64) -> String {
    const UNITS: [&str; 4] = ["B", "kB", "MB", "GB"];
    let mut value = bytes;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    format!("{} {}", (value * 10.0).round() / 10.0, UNITS[unit])
}

/// The x axis of "something vs N": linear in log2 N, with one tick at each measured N (plotters'
/// own ticks would land on round values of log2 N, which are rarely the sizes that were run).
/// Any transformed x works the same way (`antientropy_bytes` uses log10(1 + d)).
struct Log2Axis {
    linear: RangedCoordf64,
    ticks: Vec<f64>,
}

impl Ranged for Log2Axis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        self.linear.map(value, limit)
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> Range<f64> {
        self.linear.range()
    }
}

/// One named line of a [`lines`] chart; `dashed` draws it as a reference line.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    pub dashed: bool,
}

/// A plain line chart: x linear, y linear or log10, one legend entry per series.
pub fn lines(
    path: &Path,
    caption: &str,
    (x_desc, y_desc): (&str, &str),
    series: &[Series],
    log_y: bool,
) -> Result<(), PlotError> {
    if series.iter().all(|s| s.points.is_empty()) {
        return Err(PlotError::NoRows);
    }
    draw_lines(path, caption, (x_desc, y_desc), series, log_y).map_err(|source| PlotError::Draw {
        path: path.to_path_buf(),
        source,
    })
}

fn draw_lines(
    path: &Path,
    caption: &str,
    (x_desc, y_desc): (&str, &str),
    series: &[Series],
    log_y: bool,
) -> Result<(), Box<dyn Error + Send + Sync>> {
    let points = series.iter().flat_map(|s| s.points.iter().copied());
    let (mut x_min, mut x_max, mut y_min, mut y_max) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for (x, y) in points {
        x_min = x_min.min(x);
        x_max = x_max.max(x);
        y_min = y_min.min(y);
        y_max = y_max.max(y);
    }
    if x_max <= x_min {
        x_max = x_min + 1.0;
    }
    let root = SVGBackend::new(path, (960, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    macro_rules! finish {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .x_desc(x_desc)
                .y_desc(y_desc)
                .label_style((FONT, 15))
                .axis_desc_style((FONT, 17))
                .draw()?;
            for (index, s) in series.iter().enumerate() {
                let colour = series_colour(index);
                let style = colour.stroke_width(2);
                if s.dashed {
                    chart
                        .draw_series(DashedLineSeries::new(s.points.clone(), 6, 4, style))?
                        .label(s.name.clone())
                        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], style));
                } else {
                    chart
                        .draw_series(LineSeries::new(s.points.clone(), style))?
                        .label(s.name.clone())
                        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], style));
                    chart.draw_series(
                        s.points
                            .iter()
                            .map(|p| Circle::new(*p, 4, colour.stroke_width(2))),
                    )?;
                }
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.9))
                .border_style(BLACK.mix(0.3))
                .label_font((FONT, 15))
                .position(SeriesLabelPosition::UpperLeft)
                .draw()?;
        }};
    }
    if log_y {
        let lo = (y_min.max(1e-3)) / 2.0;
        finish!(
            ChartBuilder::on(&root)
                .caption(caption, (FONT, 22))
                .margin(20)
                .x_label_area_size(55)
                .y_label_area_size(80)
                .build_cartesian_2d(x_min..x_max, (lo..y_max * 3.0).log_scale())?
        );
    } else {
        let top = if y_max > 0.0 { y_max * 1.15 } else { 1.0 };
        finish!(
            ChartBuilder::on(&root)
                .caption(caption, (FONT, 22))
                .margin(20)
                .x_label_area_size(55)
                .y_label_area_size(80)
                .build_cartesian_2d(x_min..x_max, 0.0..top)?
        );
    }
    root.present()?;
    Ok(())
}

/// The timeline of a live churn run: above, request latency p50 and p99 per slice (log10 y);
/// below, requests and failed requests per slice. Kills (red) and restarts (green) are
/// vertical lines in both panels, so a latency spike or a burst of failures can be read
/// against the event that caused it. Lines break where slices had no request (the client
/// waited on one slow request, or on a restarted peer).
pub fn churn_timeline(path: &Path, caption: &str, row: &LiveChurnRow) -> Result<(), PlotError> {
    if row.slices.is_empty() {
        return Err(PlotError::NoRows);
    }
    draw_churn_timeline(path, caption, row).map_err(|source| PlotError::Draw {
        path: path.to_path_buf(),
        source,
    })
}

/// The slices cut into runs of adjacent ones.
fn contiguous_runs(slices: &[ChurnSlice], slice_s: f64) -> Vec<&[ChurnSlice]> {
    let mut runs = Vec::new();
    let mut start = 0;
    for i in 1..=slices.len() {
        if i == slices.len() || slices[i].start_s - slices[i - 1].start_s > 1.5 * slice_s {
            runs.push(&slices[start..i]);
            start = i;
        }
    }
    runs
}

/// `1000` -> `1000`, `0.5` -> `0.5`: no trailing `.0` on round tick values.
fn plain_number(value: f64) -> String {
    if value.fract() == 0.0 {
        format!("{value:.0}")
    } else {
        format!("{value}")
    }
}

fn draw_churn_timeline(
    path: &Path,
    caption: &str,
    row: &LiveChurnRow,
) -> Result<(), Box<dyn Error + Send + Sync>> {
    let (slices, events) = (&row.slices, &row.events);
    let slice_s = row.slice_ms as f64 / 1_000.0;
    let runs = contiguous_runs(slices, slice_s);
    let x_max = slices
        .iter()
        .map(|s| s.start_s + slice_s)
        .chain(events.iter().map(|e| e.at_s))
        .fold(1.0, f64::max)
        * 1.02;
    let (lat_min, lat_max) = slices
        .iter()
        .flat_map(|s| [s.p50_ms, s.p99_ms])
        .fold((f64::MAX, f64::MIN), |(lo, hi), ms| {
            (lo.min(ms), hi.max(ms))
        });
    let (lat_lo, lat_hi) = (lat_min.max(1e-2) / 2.0, lat_max.max(1e-2) * 8.0);
    let ops_hi = slices
        .iter()
        .map(|s| (s.puts + s.gets) as f64)
        .fold(1.0, f64::max)
        * 1.3;
    let event_style = |kind: ChurnEventKind| match kind {
        ChurnEventKind::Kill => series_colour(1).stroke_width(1),
        _ => series_colour(2).stroke_width(1),
    };

    let root = SVGBackend::new(path, (960, 720)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(caption, (FONT, 22))?;
    let (upper, lower) = root.split_vertically(440);

    let mut latency = ChartBuilder::on(&upper)
        .margin(15)
        .x_label_area_size(35)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..x_max, (lat_lo..lat_hi).log_scale())?;
    latency
        .configure_mesh()
        .y_desc("request latency, ms (log scale)")
        .x_label_formatter(&|x| plain_number(*x))
        .y_label_formatter(&|y| plain_number(*y))
        .label_style((FONT, 15))
        .axis_desc_style((FONT, 17))
        .draw()?;
    for event in events {
        latency.draw_series(DashedLineSeries::new(
            vec![(event.at_s, lat_lo), (event.at_s, lat_hi)],
            5,
            4,
            event_style(event.kind),
        ))?;
    }
    type Percentile = (&'static str, fn(&ChurnSlice) -> f64, RGBAColor);
    let percentiles: [Percentile; 2] = [
        ("p50 per slice", |s| s.p50_ms, series_colour(0)),
        ("p99 per slice", |s| s.p99_ms, series_colour(3)),
    ];
    for (name, value, colour) in percentiles {
        let style = colour.stroke_width(2);
        for run in &runs {
            let points = run.iter().map(|s| (s.start_s, value(s).max(lat_lo)));
            latency.draw_series(LineSeries::new(points, style).point_size(2))?;
        }
        latency
            .draw_series(std::iter::empty::<PathElement<(f64, f64)>>())?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], style));
    }
    for (kind, name) in [
        (ChurnEventKind::Kill, "peer killed (-9)"),
        (ChurnEventKind::Restart, "peer restarted empty"),
    ] {
        let style = event_style(kind);
        latency
            .draw_series(std::iter::empty::<PathElement<(f64, f64)>>())?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x + 12, y - 7), (x + 12, y + 7)], style));
    }
    latency
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font((FONT, 14))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK.mix(0.4))
        .draw()?;

    let mut requests = ChartBuilder::on(&lower)
        .margin(15)
        .x_label_area_size(50)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..x_max, 0.0..ops_hi)?;
    requests
        .configure_mesh()
        .x_desc("seconds since the first kill")
        .y_desc("requests per slice")
        .x_label_formatter(&|x| plain_number(*x))
        .y_label_formatter(&|y| plain_number(*y))
        .label_style((FONT, 15))
        .axis_desc_style((FONT, 17))
        .draw()?;
    for event in events {
        requests.draw_series(DashedLineSeries::new(
            vec![(event.at_s, 0.0), (event.at_s, ops_hi)],
            5,
            4,
            event_style(event.kind),
        ))?;
    }
    let total = series_colour(0).stroke_width(2);
    for run in &runs {
        let points = run.iter().map(|s| (s.start_s, (s.puts + s.gets) as f64));
        requests.draw_series(LineSeries::new(points, total).point_size(2))?;
    }
    requests
        .draw_series(std::iter::empty::<PathElement<(f64, f64)>>())?
        .label("requests (puts + gets)")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], total));
    let failed = series_colour(1);
    requests
        .draw_series(
            slices
                .iter()
                .filter(|s| s.puts_failed + s.gets_failed > 0)
                .map(|s| {
                    Circle::new(
                        (s.start_s, (s.puts_failed + s.gets_failed) as f64),
                        4,
                        failed.filled(),
                    )
                }),
        )?
        .label("failed requests (slices with any)")
        .legend(move |(x, y)| Circle::new((x + 12, y), 4, failed.filled()));
    requests
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font((FONT, 14))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK.mix(0.4))
        .draw()?;
    root.present()?;
    Ok(())
}
