//! The timeline chart: a run's spans (`xaas_core::report::Timeline`) laid
//! out as SVG rectangles, one lane per kind, on a time axis from the run's
//! start to its end (or now, while it runs). Pure: the template only
//! writes out what this computes.

use time::OffsetDateTime;
use xaas_core::report::{SpanKind, Timeline};

/// Width of the lane names on the left.
const GUTTER: f64 = 140.0;
const RIGHT_PAD: f64 = 12.0;
const LANE_HEIGHT: f64 = 26.0;
const BAR_HEIGHT: f64 = 16.0;
const AXIS_HEIGHT: f64 = 24.0;
/// An instant (a trigger, a dry run's request) still needs to be seen.
const MIN_BAR_WIDTH: f64 = 2.0;
/// At most this many ticks on the axis.
const MAX_TICKS: f64 = 8.0;

/// What the template draws.
#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    pub width: f64,
    pub height: f64,
    pub lanes: Vec<Lane>,
    pub bars: Vec<Bar>,
    pub ticks: Vec<Tick>,
    /// The axis line's y.
    pub axis_y: f64,
    /// Seconds from the left edge to the right edge.
    pub seconds: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Lane {
    pub name: &'static str,
    /// Baseline of its name.
    pub text_y: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    pub x: f64,
    pub y: f64,
    pub w: f64,
    pub h: f64,
    /// CSS classes: `span-<kind>`, plus `failed` or `open`.
    pub class: String,
    /// The hover text: what it was, when, for how long.
    pub title: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Tick {
    pub x: f64,
    pub label: String,
}

fn lane_name(kind: SpanKind) -> &'static str {
    match kind {
        SpanKind::Page => "Source pages",
        SpanKind::Session => "Sessions",
        SpanKind::Request => "Bulk requests",
        SpanKind::Trigger => "Triggers",
        SpanKind::Cooldown => "Cooldown waits",
        SpanKind::Import => "Import processing",
    }
}

/// Lays `timeline` out `width` pixels wide. Spans still open end at `now`
/// (or at the run's end, once it has one).
pub fn layout(timeline: &Timeline, now: OffsetDateTime, width: f64) -> Chart {
    let width = width.max(GUTTER + RIGHT_PAD + 100.0);
    let first = timeline.spans.iter().map(|s| s.start).min();
    let start = match (timeline.started, first) {
        (Some(a), Some(b)) => a.min(b),
        (a, b) => a.or(b).unwrap_or(now),
    };
    let open_end = timeline.ended.unwrap_or(now).max(start);
    let last = timeline.spans.iter().map(|s| s.end.unwrap_or(open_end)).max().unwrap_or(open_end);
    let end = last.max(open_end);
    let seconds = (end - start).as_seconds_f64().max(1.0);
    let plot = width - GUTTER - RIGHT_PAD;
    let x_of = |t: OffsetDateTime| GUTTER + (t - start).as_seconds_f64().max(0.0) / seconds * plot;

    let lanes: Vec<Lane> = SpanKind::ALL
        .iter()
        .enumerate()
        .map(|(i, kind)| Lane { name: lane_name(*kind), text_y: i as f64 * LANE_HEIGHT + LANE_HEIGHT / 2.0 + 4.0 })
        .collect();
    let lane_y = |kind: SpanKind| {
        let i = SpanKind::ALL.iter().position(|k| *k == kind).unwrap_or(0);
        i as f64 * LANE_HEIGHT + (LANE_HEIGHT - BAR_HEIGHT) / 2.0
    };
    let bars = timeline
        .spans
        .iter()
        .map(|s| {
            let span_end = s.end.unwrap_or(open_end).max(s.start);
            let x = x_of(s.start);
            let w = (x_of(span_end) - x).max(MIN_BAR_WIDTH);
            let mut class = format!("span-{}", s.kind.as_str());
            if s.failed {
                class.push_str(" failed");
            } else if s.end.is_none() {
                class.push_str(" open");
            }
            let from = (s.start - start).as_seconds_f64();
            let took = (span_end - s.start).as_seconds_f64();
            let state = if s.end.is_none() {
                ", still going"
            } else if s.failed {
                ", failed"
            } else {
                ""
            };
            let title = format!("{}: at {}, {:.1}s{state}", s.label, clock(from), took);
            Bar { x, y: lane_y(s.kind), w, h: BAR_HEIGHT, class, title }
        })
        .collect();
    let axis_y = SpanKind::ALL.len() as f64 * LANE_HEIGHT + 2.0;
    let step = tick_step(seconds);
    let ticks = (0..)
        .map(|i| f64::from(i) * step)
        .take_while(|t| *t <= seconds + 1e-9)
        .map(|t| Tick { x: GUTTER + t / seconds * plot, label: clock(t) })
        .collect();
    Chart { width, height: axis_y + AXIS_HEIGHT, lanes, bars, ticks, axis_y, seconds }
}

/// The smallest round step that keeps the axis under `MAX_TICKS` ticks.
fn tick_step(seconds: f64) -> f64 {
    const STEPS: [f64; 16] =
        [1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0, 21600.0, 86400.0];
    STEPS.into_iter().find(|s| seconds / s <= MAX_TICKS).unwrap_or(86400.0 * (seconds / 86400.0 / MAX_TICKS).ceil())
}

/// Seconds from the start as `42s`, `3m05s` or `1h02m`.
pub fn clock(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xaas_core::report::Span;

    fn t(secs: f64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap() + time::Duration::seconds_f64(secs)
    }

    /// 1000 px of plot.
    const WIDTH: f64 = GUTTER + 1000.0 + RIGHT_PAD;

    fn round(v: f64) -> f64 {
        (v * 1000.0).round() / 1000.0
    }

    fn span(kind: SpanKind, start: f64, end: Option<f64>) -> Span {
        Span { kind, label: format!("{kind:?}"), start: t(start), end: end.map(t), failed: false }
    }

    #[test]
    fn spans_map_to_their_lane_and_their_share_of_the_width() {
        let timeline = Timeline {
            started: Some(t(0.0)),
            ended: Some(t(100.0)),
            spans: vec![span(SpanKind::Session, 10.0, Some(60.0)), span(SpanKind::Trigger, 60.0, Some(60.0))],
        };
        let chart = layout(&timeline, t(500.0), WIDTH);
        // 1000 px of plot for 100 s: 10 px a second, after the gutter.
        let session = &chart.bars[0];
        assert_eq!((round(session.x), round(session.w)), (GUTTER + 100.0, 500.0));
        assert_eq!(session.class, "span-session");
        let trigger = &chart.bars[1];
        assert_eq!((round(trigger.x), trigger.w), (GUTTER + 600.0, MIN_BAR_WIDTH), "an instant stays visible");
        assert!(trigger.y > session.y, "each kind has its own lane");
        assert_eq!(chart.lanes.len(), SpanKind::ALL.len());
        assert_eq!(chart.seconds, 100.0);
        assert!(session.title.starts_with("Session: at 10s, 50.0s"), "{}", session.title);
    }

    #[test]
    fn an_open_span_runs_to_now_while_the_run_is_going() {
        let timeline = Timeline { started: Some(t(0.0)), ended: None, spans: vec![span(SpanKind::Import, 5.0, None)] };
        let chart = layout(&timeline, t(20.0), WIDTH);
        let bar = &chart.bars[0];
        assert_eq!(bar.class, "span-import open");
        assert_eq!(round(bar.x + bar.w), GUTTER + 1000.0, "to the right edge: now");
        assert!(bar.title.ends_with("still going"), "{}", bar.title);
    }

    #[test]
    fn ticks_are_round_and_few() {
        assert_eq!(tick_step(7.0), 1.0);
        assert_eq!(tick_step(100.0), 15.0);
        assert_eq!(tick_step(3000.0), 600.0);
        let timeline = Timeline { started: Some(t(0.0)), ended: Some(t(100.0)), spans: vec![] };
        let chart = layout(&timeline, t(100.0), WIDTH);
        let labels: Vec<&str> = chart.ticks.iter().map(|t| t.label.as_str()).collect();
        assert_eq!(labels, ["0s", "15s", "30s", "45s", "1m00s", "1m15s", "1m30s"]);
        assert_eq!(clock(3725.0), "1h02m");
    }

    #[test]
    fn an_empty_timeline_still_has_an_axis() {
        let chart = layout(&Timeline::default(), t(0.0), 10.0);
        assert!(chart.bars.is_empty());
        assert_eq!(chart.seconds, 1.0);
        assert!(!chart.ticks.is_empty());
        assert!(chart.width >= GUTTER + RIGHT_PAD + 100.0);
    }
}
