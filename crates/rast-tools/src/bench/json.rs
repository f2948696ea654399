//! The report's JSON: `serde_json` values (keys kept in insertion order, so
//! a report reads in the order it is built), with the two helpers the
//! report builds its objects with. Non-finite numbers are written `null`.

pub use serde_json::Value as Json;

/// Building a report object field by field.
pub trait JsonObject {
    /// An empty object.
    fn object() -> Json;

    /// Adds `key: value` to an object (no-op on other values).
    fn set(&mut self, key: &str, value: impl Into<Json>) -> &mut Self;
}

impl JsonObject for Json {
    fn object() -> Json {
        Json::Object(serde_json::Map::new())
    }

    fn set(&mut self, key: &str, value: impl Into<Json>) -> &mut Self {
        if let Json::Object(fields) = self {
            fields.insert(key.to_owned(), value.into());
        }
        self
    }
}

/// The report as a file holds it: indented JSON, a whole number written
/// without a fraction (`"errors": 0`, not `0.0`), whichever type measured it.
pub fn pretty(value: &Json) -> String {
    let mut value = value.clone();
    whole_numbers(&mut value);
    serde_json::to_string_pretty(&value).expect("a JSON value always serializes")
}

/// Turns every whole `f64` in `value` into an integer.
fn whole_numbers(value: &mut Json) {
    match value {
        Json::Number(number) => {
            if let Some(float) = number.as_f64()
                && number.is_f64()
                && float.fract() == 0.0
                && float.abs() < 9.0e15
            {
                *value = Json::from(float as i64);
            }
        }
        Json::Array(items) => items.iter_mut().for_each(whole_numbers),
        Json::Object(fields) => fields.values_mut().for_each(whole_numbers),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fields in the order they were set, text escaped, a NaN and a
    /// missing value as null, integers as integers.
    #[test]
    fn writes_valid_json() {
        let mut value = Json::object();
        value
            .set("name", "a\"b\n")
            .set("count", 3u64)
            .set("ratio", 0.5)
            .set("whole", 2.0)
            .set("nan", f64::NAN)
            .set("none", Option::<f64>::None)
            .set("list", vec![Json::Bool(true), Json::from(1.25)]);
        assert_eq!(
            pretty(&value),
            "{\n  \"name\": \"a\\\"b\\n\",\n  \"count\": 3,\n  \"ratio\": 0.5,\n  \"whole\": 2,\n  \"nan\": null,\n  \"none\": null,\n  \"list\": [\n    true,\n    1.25\n  ]\n}"
        );
    }
}
