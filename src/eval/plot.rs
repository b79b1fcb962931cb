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

fn accuracy_vs_cost<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    report: &Report,
) -> Drawn<DB> {
    root.fill(&WHITE)?;
    let points: Vec<(f64, f64)> = report
        .rows
        .iter()
        .map(|r| (r.cost.mean, r.average_accuracy.mean))
        .collect();
    let (x_max, y_min, y_max) = points
        .iter()
        .fold((0f64, f64::MAX, f64::MIN), |(x, lo, hi), &(c, a)| {
            (x.max(c), lo.min(a), hi.max(a))
        });
    let mut chart = ChartBuilder::on(root)
        .caption("Accuracy vs cost on the test set", (FONT, 24))
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(65)
        // Extra room on the right for the labels of the dearest models.
        .build_cartesian_2d(padded(0.0, x_max * 1.15), padded(y_min, y_max))?;
    chart
        .configure_mesh()
        .x_desc("cost of the test set ($)")
        .y_desc("average accuracy (mean over datasets)")
        .draw()?;
    let router: Vec<(f64, f64)> = report
        .rows_of(RowKind::Router)
        .map(|r| (r.cost.mean, r.average_accuracy.mean))
        .collect();
    chart
        .draw_series(LineSeries::new(router.clone(), BLUE.stroke_width(2)))?
        .label("router, α from 0 to 1")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE.stroke_width(2)));
    chart.draw_series(router.iter().map(|&p| Circle::new(p, 3, BLUE.filled())))?;
    // The frontiers the whole-curve metric integrates (mixing policies query by query reaches
    // any point on them), from their cheapest point on.
    let singles: Vec<(f64, f64)> = report
        .rows_of(RowKind::Single)
        .map(|r| (r.cost.mean, r.average_accuracy.mean))
        .collect();
    let curve = &report.curve;
    for (points, colour, label) in [
        (
            &router,
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
    for row in report.rows.iter().filter(|r| r.kind != RowKind::Router) {
        let colour = if row.kind == RowKind::Oracle {
            GREEN
        } else {
            RED
        };
        let label = row
            .label
            .rsplit('/')
            .next()
            .unwrap_or(&row.label)
            .to_string();
        chart.draw_series(std::iter::once(
            EmptyElement::at((row.cost.mean, row.average_accuracy.mean))
                + Circle::new((0, 0), 5, colour.filled())
                + Text::new(label, (7, -7), (FONT, 13)),
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
