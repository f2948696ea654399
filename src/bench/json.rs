//! A minimal JSON writer for the report (no serde in the server's tree).

use std::fmt::{self, Write as _};

/// A JSON value.
#[derive(Clone, Debug, PartialEq)]
pub enum Json {
    /// `null`.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// A number (non-finite numbers are written as `null`).
    Number(f64),
    /// A string.
    Text(String),
    /// An array.
    Array(Vec<Json>),
    /// An object, keys in insertion order.
    Object(Vec<(String, Json)>),
}

impl Json {
    /// An empty object.
    pub fn object() -> Self {
        Self::Object(Vec::new())
    }

    /// Adds `key: value` to an object (no-op on other values).
    pub fn set(&mut self, key: &str, value: impl Into<Json>) -> &mut Self {
        if let Self::Object(fields) = self {
            fields.push((key.to_owned(), value.into()));
        }
        self
    }
}

impl From<f64> for Json {
    fn from(value: f64) -> Self {
        Self::Number(value)
    }
}

impl From<u64> for Json {
    fn from(value: u64) -> Self {
        Self::Number(value as f64)
    }
}

impl From<u32> for Json {
    fn from(value: u32) -> Self {
        Self::Number(f64::from(value))
    }
}

impl From<bool> for Json {
    fn from(value: bool) -> Self {
        Self::Bool(value)
    }
}

impl From<&str> for Json {
    fn from(value: &str) -> Self {
        Self::Text(value.to_owned())
    }
}

impl From<String> for Json {
    fn from(value: String) -> Self {
        Self::Text(value)
    }
}

impl<T: Into<Json>> From<Option<T>> for Json {
    fn from(value: Option<T>) -> Self {
        value.map_or(Self::Null, Into::into)
    }
}

impl From<Vec<Json>> for Json {
    fn from(value: Vec<Json>) -> Self {
        Self::Array(value)
    }
}

impl fmt::Display for Json {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_value(formatter, self, 0)
    }
}

fn write_value(out: &mut fmt::Formatter<'_>, value: &Json, depth: usize) -> fmt::Result {
    let indent = "  ".repeat(depth + 1);
    let closing = "  ".repeat(depth);
    match value {
        Json::Null => out.write_str("null"),
        Json::Bool(flag) => write!(out, "{flag}"),
        // Non-finite numbers have no JSON form.
        Json::Number(number) if !number.is_finite() => out.write_str("null"),
        Json::Number(number) if number.fract() == 0.0 && number.abs() < 1e15 => {
            write!(out, "{number:.0}")
        }
        Json::Number(number) => write!(out, "{number}"),
        Json::Text(text) => write_text(out, text),
        Json::Array(items) if items.is_empty() => out.write_str("[]"),
        Json::Array(items) => {
            out.write_str("[\n")?;
            for (position, item) in items.iter().enumerate() {
                out.write_str(&indent)?;
                write_value(out, item, depth + 1)?;
                out.write_str(if position + 1 < items.len() {
                    ",\n"
                } else {
                    "\n"
                })?;
            }
            write!(out, "{closing}]")
        }
        Json::Object(fields) if fields.is_empty() => out.write_str("{}"),
        Json::Object(fields) => {
            out.write_str("{\n")?;
            for (position, (key, item)) in fields.iter().enumerate() {
                out.write_str(&indent)?;
                write_text(out, key)?;
                out.write_str(": ")?;
                write_value(out, item, depth + 1)?;
                out.write_str(if position + 1 < fields.len() {
                    ",\n"
                } else {
                    "\n"
                })?;
            }
            write!(out, "{closing}}}")
        }
    }
}

fn write_text(out: &mut fmt::Formatter<'_>, text: &str) -> fmt::Result {
    out.write_char('"')?;
    for character in text.chars() {
        match character {
            '"' => out.write_str("\\\"")?,
            '\\' => out.write_str("\\\\")?,
            '\n' => out.write_str("\\n")?,
            '\r' => out.write_str("\\r")?,
            '\t' => out.write_str("\\t")?,
            control if u32::from(control) < 0x20 => write!(out, "\\u{:04x}", u32::from(control))?,
            other => out.write_char(other)?,
        }
    }
    out.write_char('"')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Objects, arrays, escapes and non-finite numbers come out as valid JSON.
    #[test]
    fn writes_valid_json() {
        let mut value = Json::object();
        value
            .set("name", "a\"b\n")
            .set("count", 3u64)
            .set("ratio", 0.5)
            .set("nan", f64::NAN)
            .set("none", Option::<f64>::None)
            .set("list", vec![Json::Bool(true), Json::from(1.25)]);
        assert_eq!(
            value.to_string(),
            "{\n  \"name\": \"a\\\"b\\n\",\n  \"count\": 3,\n  \"ratio\": 0.5,\n  \"nan\": null,\n  \"none\": null,\n  \"list\": [\n    true,\n    1.25\n  ]\n}"
        );
    }
}
