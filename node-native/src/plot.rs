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

use node_core::sim::experiments::HopsRow;
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

/// The x axis of "something vs N": linear in log2 N, with one tick at each measured N (plotters'
/// own ticks would land on round values of log2 N, which are rarely the sizes that were run).
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
