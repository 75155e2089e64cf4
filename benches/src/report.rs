//! What every benchmark hands back: its figures as one JSON object, with a `targets` list of
//! rows (figure, ours, anchor, ratio, target, met) that `archip-bench all` gathers into one
//! flat list.

use serde_json::{json, Value};

/// `a / b` rounded to two decimals (0 when `b` is not positive).
pub fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        (a / b * 100.0).round() / 100.0
    } else {
        0.0
    }
}

/// One row of a benchmark's `targets`: `ours` compared with `anchor` (the ratio
/// `ours / anchor`), the target it should meet (as text, e.g. `>= 1.5`) and whether it did.
pub struct TargetRow<'a> {
    pub figure: &'a str,
    pub unit: &'a str,
    pub ours: f64,
    pub anchor: f64,
    pub ratio: f64,
    pub target: &'a str,
    pub met: bool,
}

impl TargetRow<'_> {
    pub fn to_json(&self) -> Value {
        json!({
            "figure": self.figure,
            "unit": self.unit,
            "ours": self.ours,
            "anchor": self.anchor,
            "ratio": self.ratio,
            "target": self.target,
            "met": self.met,
        })
    }
}

/// The rows as a JSON array.
pub fn targets(rows: &[TargetRow<'_>]) -> Value {
    Value::Array(rows.iter().map(TargetRow::to_json).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_round_and_never_divide_by_zero() {
        assert_eq!(ratio(1.0, 3.0), 0.33);
        assert_eq!(ratio(5.0, 0.0), 0.0);
        let row = TargetRow {
            figure: "x",
            unit: "IOPS",
            ours: 7.0,
            anchor: 10.0,
            ratio: ratio(7.0, 10.0),
            target: ">= 0.7",
            met: true,
        };
        assert_eq!(row.to_json()["ratio"], 0.7);
        assert_eq!(targets(&[row])[0]["met"], true);
    }
}
