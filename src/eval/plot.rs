//! The report's figures, as SVG and PNG: accuracy against cost (single models, oracle and the
//! router's α sweep), accuracy and cost against α (the paper's elbows), and which models the
//! router picks at each α.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::report::{Report, RowKind};
use crate::error::{Error, Result};

const SIZE: (u32, u32) = (960, 640);
const FONT: &str = "sans-serif";

type Drawn<DB> = std::result::Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

/// Draws one figure with both backends.
macro_rules! render {
    ($dir:expr, $name:literal, $draw:ident, $report:expr) => {{
        let svg = $dir.join(concat!($name, ".svg"));
        $draw(&SVGBackend::new(&svg, SIZE).into_drawing_area(), $report)
            .map_err(|e| plot_error(&svg, e))?;
        let png = $dir.join(concat!($name, ".png"));
        $draw(&BitMapBackend::new(&png, SIZE).into_drawing_area(), $report)
            .map_err(|e| plot_error(&png, e))?;
    }};
}

/// Writes `accuracy_vs_cost`, `alpha_sweep` and `selection_share` (`.svg`, `.png`) into `dir`.
pub fn write_plots(report: &Report, dir: &Path) -> Result<()> {
    render!(dir, "accuracy_vs_cost", accuracy_vs_cost, report);
    render!(dir, "alpha_sweep", alpha_sweep, report);
    render!(dir, "selection_share", selection_share, report);
    Ok(())
}

fn plot_error(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Invalid(format!(
        "{}: could not draw the plot ({e}); plotting needs a sans-serif font (e.g. fonts-dejavu-core)",
        path.display()
    ))
}

/// `lo..hi` widened by 5 % each side (and made non-empty).
fn padded(lo: f64, hi: f64) -> std::ops::Range<f64> {
    let pad = ((hi - lo) * 0.05).max(1e-3);
    (lo - pad)..(hi + pad)
}

/// Costs on a log axis start here: the cheapest positive cost over 2 (a free model sits on the
/// left edge rather than off the axis).
fn cost_floor(costs: impl Iterator<Item = f64>) -> f64 {
    let cheapest = costs.filter(|&c| c > 0.0).fold(f64::MAX, f64::min);
    if cheapest == f64::MAX {
        1e-6
    } else {
        cheapest / 2.0
    }
}

fn accuracy_vs_cost<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    report: &Report,
) -> Drawn<DB> {
    root.fill(&WHITE)?;
    let floor = cost_floor(report.rows.iter().map(|r| r.cost.mean));
    let at = |cost: f64, accuracy: f64| (cost.max(floor), accuracy);
    let (x_max, y_min, y_max) =
        report
            .rows
            .iter()
            .fold((floor, f64::MAX, f64::MIN), |(x, lo, hi), r| {
                let a = r.average_accuracy.mean;
                (x.max(r.cost.mean), lo.min(a), hi.max(a))
            });
    // Costs span orders of magnitude (the paper's figures use a log axis too); extra room on
    // the right for the labels of the dearest models.
    let mut chart = ChartBuilder::on(root)
        .caption("Accuracy vs cost on the test set", (FONT, 24))
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(65)
        .build_cartesian_2d((floor * 0.8..x_max * 2.5).log_scale(), padded(y_min, y_max))?;
    chart
        .configure_mesh()
        .x_desc("cost of the test set ($, log scale)")
        .y_desc("average accuracy (mean over datasets)")
        .draw()?;
    let points_of = |kind: RowKind| -> Vec<(f64, f64)> {
        report
            .rows_of(kind)
            .map(|r| (r.cost.mean, r.average_accuracy.mean))
            .collect()
    };
    let router_points = points_of(RowKind::Router);
    let router: Vec<(f64, f64)> = router_points.iter().map(|&(c, a)| at(c, a)).collect();
    chart
        .draw_series(LineSeries::new(router.clone(), BLUE.stroke_width(2)))?
        .label("router, α from 0 to 1")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE.stroke_width(2)));
    chart.draw_series(router.iter().map(|&p| Circle::new(p, 3, BLUE.filled())))?;
    // The frontiers the whole-curve metric integrates (mixing policies query by query reaches
    // any point on them), from their cheapest point on.
    let singles = points_of(RowKind::Single);
    let curve = &report.curve;
    for (points, colour, label) in [
        (
            &router_points,
            BLUE,
            format!("router frontier (area {:.4})", curve.router.mean),
        ),
        (
            &singles,
            RED,
            format!("single models' frontier (area {:.4})", curve.singles.mean),
        ),
    ] {
        let hull: Vec<(f64, f64)> = super::frontier(points)
            .into_iter()
            .filter(|p| p.0 > 0.0 || p.1 > 0.0)
            .map(|(c, a)| at(c, a))
            .collect();
        chart
            .draw_series(DashedLineSeries::new(
                hull,
                6,
                4,
                colour.mix(0.6).stroke_width(1),
            ))?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.mix(0.6)));
    }
    let marked: Vec<_> = report
        .rows
        .iter()
        .filter(|r| r.kind != RowKind::Router)
        .map(|row| {
            let label = row.label.rsplit('/').next().unwrap_or(&row.label);
            let point = at(row.cost.mean, row.average_accuracy.mean);
            (row.kind, label.to_string(), point)
        })
        .collect();
    let anchors: Vec<(i32, i32)> = marked
        .iter()
        .map(|(_, _, p)| chart.backend_coord(p))
        .collect();
    let widths: Vec<i32> = marked
        .iter()
        .map(|(_, label, _)| label_width(label))
        .collect();
    let offsets = place_labels(&anchors, &widths);
    for ((kind, label, point), offset) in marked.into_iter().zip(offsets) {
        let colour = if kind == RowKind::Oracle { GREEN } else { RED };
        chart.draw_series(std::iter::once(
            EmptyElement::at(point)
                + Circle::new((0, 0), 5, colour.filled())
                + Text::new(label, offset, (FONT, LABEL_FONT)),
        ))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .border_style(BLACK)
        .background_style(WHITE.mix(0.9))
        .draw()?;
    root.present()
}

const LABEL_FONT: i32 = 13;

/// A label's width in pixels, estimated (0.6 em per character in a sans-serif font).
fn label_width(label: &str) -> i32 {
    (label.chars().count() as f64 * LABEL_FONT as f64 * 0.6).ceil() as i32
}

/// Where each point's label goes, as an offset from its anchor (pixels, y down): the first of
/// a few places around the point, then further above and below, whose box overlaps no label
/// placed before and no marker. Labels are placed left to right.
fn place_labels(anchors: &[(i32, i32)], widths: &[i32]) -> Vec<(i32, i32)> {
    type Box = (i32, i32, i32, i32);
    let overlaps = |a: Box, b: Box| a.0 < b.2 && b.0 < a.2 && a.1 < b.3 && b.1 < a.3;
    let height = LABEL_FONT + 2;
    let markers: Vec<Box> = anchors
        .iter()
        .map(|&(x, y)| (x - 5, y - 5, x + 5, y + 5))
        .collect();
    let mut order: Vec<usize> = (0..anchors.len()).collect();
    order.sort_by_key(|&i| anchors[i]);
    let mut placed: Vec<Box> = Vec::new();
    let mut offsets = vec![(7, -7 - height); anchors.len()];
    for i in order {
        let (x, y) = anchors[i];
        let w = widths[i];
        let mut candidates = vec![(7, -height - 2), (7, 4), (-w - 7, -height - 2), (-w - 7, 4)];
        for step in 1..=16 {
            let dy = step * height;
            candidates.extend([
                (7, -height - 2 - dy),
                (7, 4 + dy),
                (-w - 7, -height - 2 - dy),
                (-w - 7, 4 + dy),
            ]);
        }
        let free = |&(dx, dy): &(i32, i32)| {
            let b = (x + dx, y + dy, x + dx + w, y + dy + height);
            !placed.iter().chain(&markers).any(|&o| overlaps(b, o))
        };
        let (dx, dy) = candidates
            .iter()
            .copied()
            .find(|c| free(c))
            .unwrap_or(candidates[0]);
        placed.push((x + dx, y + dy, x + dx + w, y + dy + height));
        offsets[i] = (dx, dy);
    }
    offsets
}

fn alpha_sweep<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, report: &Report) -> Drawn<DB> {
    root.fill(&WHITE)?;
    let best = &report.headlines;
    let rows: Vec<_> = report.rows_of(RowKind::Router).collect();
    let (top, bottom) = root.split_vertically(SIZE.1 / 2);
    let series = [
        (
            &top,
            "average accuracy",
            rows.iter()
                .map(|r| (r.alpha.unwrap_or_default(), r.average_accuracy.mean))
                .collect::<Vec<_>>(),
            best.best_single_accuracy,
        ),
        (
            &bottom,
            "cost of the test set ($)",
            rows.iter()
                .map(|r| (r.alpha.unwrap_or_default(), r.cost.mean))
                .collect(),
            best.best_single_cost,
        ),
    ];
    for (area, what, points, reference) in series {
        let lo = points.iter().map(|p| p.1).fold(reference, f64::min);
        let hi = points.iter().map(|p| p.1).fold(reference, f64::max);
        let mut chart = ChartBuilder::on(area)
            .caption(format!("Router {what} vs α"), (FONT, 20))
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(65)
            .build_cartesian_2d(0f64..1f64, padded(lo, hi))?;
        chart.configure_mesh().x_desc("α").y_desc(what).draw()?;
        chart.draw_series(LineSeries::new(points.clone(), BLUE.stroke_width(2)))?;
        chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, BLUE.filled())))?;
        chart
            .draw_series(DashedLineSeries::new(
                vec![(0.0, reference), (1.0, reference)],
                6,
                4,
                RED.into(),
            ))?
            .label(format!("best single model ({})", best.best_single))
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .border_style(BLACK)
            .background_style(WHITE.mix(0.9))
            .draw()?;
    }
    root.present()
}

fn selection_share<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    report: &Report,
) -> Drawn<DB> {
    root.fill(&WHITE)?;
    let rows: Vec<_> = report.rows_of(RowKind::Router).collect();
    let mut chart = ChartBuilder::on(root)
        .caption("Models chosen by the router", (FONT, 24))
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(65)
        .build_cartesian_2d(0f64..1f64, 0f64..1f64)?;
    chart
        .configure_mesh()
        .x_desc("α")
        .y_desc("share of test queries")
        .draw()?;
    // Stacked areas: model m's band lies between the cumulative shares of models < m and ≤ m;
    // drawing the tallest cumulative area first lets each later one cover the part below it.
    let used: Vec<usize> = (0..report.models.len())
        .filter(|&m| rows.iter().any(|r| r.selection[m] > 0.0))
        .collect();
    for (rank, &m) in used.iter().enumerate().rev() {
        let cumulative: Vec<(f64, f64)> = rows
            .iter()
            .map(|r| {
                let below: f64 = used[..=rank].iter().map(|&u| r.selection[u]).sum();
                (r.alpha.unwrap_or_default(), below)
            })
            .collect();
        let colour = Palette99::pick(m).to_rgba();
        chart
            .draw_series(AreaSeries::new(cumulative, 0.0, colour.filled()))?
            .label(report.models[m].clone())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 15, y + 5)], colour.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .border_style(BLACK)
        .background_style(WHITE.mix(0.9))
        .draw()?;
    root.present()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_of_crowded_points_do_not_overlap() {
        // Eleven cheap models within a few pixels of each other, as on RouterBench's plot.
        let anchors: Vec<(i32, i32)> = (0..11).map(|i| (100 + i * 3, 300 - i * 2)).collect();
        let widths: Vec<i32> = (0..11).map(|i| 60 + i * 4).collect();
        let offsets = place_labels(&anchors, &widths);
        let boxes: Vec<(i32, i32, i32, i32)> = anchors
            .iter()
            .zip(&offsets)
            .zip(&widths)
            .map(|((&(x, y), &(dx, dy)), &w)| (x + dx, y + dy, x + dx + w, y + dy + LABEL_FONT + 2))
            .collect();
        for (i, a) in boxes.iter().enumerate() {
            for b in &boxes[i + 1..] {
                let overlap = a.0 < b.2 && b.0 < a.2 && a.1 < b.3 && b.1 < a.3;
                assert!(!overlap, "{a:?} overlaps {b:?}");
            }
        }
    }

    #[test]
    fn free_models_sit_at_the_left_edge_of_the_log_axis() {
        assert_eq!(cost_floor([0.0, 0.4, 2.0].into_iter()), 0.2);
        assert_eq!(cost_floor([0.0].into_iter()), 1e-6);
    }
}
