//! Reading the figures of experiment reports in tests.
#![allow(dead_code)]

use serde_json::Value;

/// The point of `points` measured at fraction `f` with the boolean field `flag` = `on`.
pub fn point<'a>(points: &'a [Value], f: f64, flag: &str, on: bool) -> &'a Value {
    points
        .iter()
        .find(|p| p["f"].as_f64() == Some(f) && p[flag].as_bool() == Some(on))
        .unwrap_or_else(|| panic!("no point at f = {f} with {flag} = {on}"))
}

/// A number in a point, failing with the point when it is missing.
pub fn num(p: &Value, field: &str) -> f64 {
    p[field]
        .as_f64()
        .unwrap_or_else(|| panic!("{field} in {p}"))
}
