//! `chart.svg`: the batch restart against Ansible by fleet size, and one process
//! restart by each contender, both on log scales since they span orders of magnitude,
//! with our figures in both transports (plaintext, mutual TLS), one controller on SQLite.

use std::path::Path;

use plotters::prelude::*;

use super::BenchError;
use super::report::{Results, StoreKind};

fn failed(e: impl std::fmt::Display) -> BenchError {
    BenchError::Failed(format!("drawing the chart: {e}"))
}

pub fn draw(results: &Results, path: &Path) -> Result<(), BenchError> {
    let root = SVGBackend::new(path, (1200, 440)).into_drawing_area();
    root.fill(&WHITE).map_err(failed)?;
    let (left, right) = root.split_horizontally(560);

    let by_transport = |tls: bool| -> Vec<(f64, f64)> {
        results
            .fleet
            .iter()
            .filter(|f| f.tls == tls && f.store == StoreKind::Sqlite)
            .map(|f| (f.hosts as f64, f.wall_ms / 1e3))
            .collect()
    };
    let ours = by_transport(false);
    let ours_tls = by_transport(true);
    let ansible: Vec<(f64, f64)> = results
        .ansible
        .iter()
        .map(|a| (a.hosts as f64, a.wall_ms / 1e3))
        .collect();
    let xs = ours.iter().chain(&ours_tls).chain(&ansible).map(|p| p.0);
    let ys = ours.iter().chain(&ours_tls).chain(&ansible).map(|p| p.1);
    let x_max = xs.fold(10.0_f64, f64::max) * 2.0;
    let y_min = ys.clone().fold(f64::INFINITY, f64::min).min(1.0) / 2.0;
    let y_max = ys.fold(1.0_f64, f64::max) * 2.0;
    let mut chart = ChartBuilder::on(&left)
        .caption("Batch restart: wall time (s) by hosts", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(52)
        .build_cartesian_2d((0.5_f64..x_max).log_scale(), (y_min..y_max).log_scale())
        .map_err(failed)?;
    chart
        .configure_mesh()
        .x_desc("hosts")
        .y_desc("seconds")
        .draw()
        .map_err(failed)?;
    for (points, color, label) in [
        (&ours, BLUE, "ocp batchRestartAgents"),
        (&ours_tls, GREEN, "ocp batchRestartAgents, mutual TLS"),
        (&ansible, RED, "ansible-playbook (forks 50)"),
    ] {
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(failed)?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color));
        chart
            .draw_series(points.iter().map(|&p| Circle::new(p, 4, color.filled())))
            .map_err(failed)?;
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(failed)?;

    // (label, median, colour): ours blue, ours over TLS green, supervisord red.
    let bars: Vec<(String, f64, RGBColor)> = results
        .restart
        .iter()
        .map(|l| {
            let first = l.name.split_whitespace().next().unwrap_or("").to_string();
            let (label, color) = if l.tls {
                (format!("{first}+TLS"), GREEN)
            } else if first.starts_with("supervisor") {
                (first, RED)
            } else {
                (first, BLUE)
            };
            (label, l.median_ms.max(0.01), color)
        })
        .collect();
    let top = bars.iter().map(|b| b.1).fold(1.0_f64, f64::max) * 3.0;
    let names: Vec<String> = bars.iter().map(|b| b.0.clone()).collect();
    let mut chart = ChartBuilder::on(&right)
        .caption("One process restart: median (ms)", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(52)
        .build_cartesian_2d(
            -0.5_f64..(bars.len() as f64 - 0.5).max(0.5),
            (0.1_f64..top).log_scale(),
        )
        .map_err(failed)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(bars.len().max(1))
        .x_label_formatter(&|x| {
            let i = x.round();
            if (x - i).abs() > 0.01 || i < 0.0 {
                return String::new();
            }
            names.get(i as usize).cloned().unwrap_or_default()
        })
        .y_desc("milliseconds")
        .draw()
        .map_err(failed)?;
    chart
        .draw_series(bars.iter().enumerate().map(|(i, (_, v, color))| {
            let x = i as f64;
            Rectangle::new([(x - 0.3, 0.1), (x + 0.3, *v)], color.mix(0.7).filled())
        }))
        .map_err(failed)?;
    chart
        .draw_series(bars.iter().enumerate().map(|(i, (_, v, _))| {
            Text::new(
                format!("{v:.1}"),
                (i as f64 - 0.2, *v * 1.15),
                ("sans-serif", 13),
            )
        }))
        .map_err(failed)?;
    root.present().map_err(failed)?;
    Ok(())
}
