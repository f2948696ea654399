//! Just enough JSON to write a verdict (the crate has no serde).

use std::fmt::{self, Write};

/// A JSON value.
#[derive(Clone, Debug, PartialEq)]
pub enum Json {
    /// `null`.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// An unsigned integer.
    Number(u64),
    /// A float (written with 1 decimal).
    Float(f64),
    /// A string.
    Text(String),
    /// An array.
    Array(Vec<Json>),
    /// An object, keys in insertion order.
    Object(Vec<(String, Json)>),
}

impl Json {
    /// An object from `(key, value)` pairs.
    pub fn object<K: Into<String>>(pairs: impl IntoIterator<Item = (K, Json)>) -> Self {
        Self::Object(
            pairs
                .into_iter()
                .map(|(key, value)| (key.into(), value))
                .collect(),
        )
    }

    /// A string value.
    pub fn text(text: impl Into<String>) -> Self {
        Self::Text(text.into())
    }

    fn write(&self, out: &mut String, indent: usize) -> fmt::Result {
        match self {
            Self::Bool(value) => write!(out, "{value}")?,
            Self::Number(value) => write!(out, "{value}")?,
            Self::Float(value) if value.is_finite() => write!(out, "{value:.1}")?,
            Self::Null | Self::Float(_) => out.push_str("null"),
            Self::Text(text) => quote(out, text)?,
            Self::Array(items) if items.iter().all(Self::is_scalar) => {
                out.push('[');
                for (position, item) in items.iter().enumerate() {
                    if position > 0 {
                        out.push_str(", ");
                    }
                    item.write(out, indent)?;
                }
                out.push(']');
            }
            Self::Array(items) => {
                out.push('[');
                for (position, item) in items.iter().enumerate() {
                    out.push_str(if position > 0 { ",\n" } else { "\n" });
                    pad(out, indent + 1);
                    item.write(out, indent + 1)?;
                }
                out.push('\n');
                pad(out, indent);
                out.push(']');
            }
            Self::Object(pairs) if pairs.is_empty() => out.push_str("{}"),
            Self::Object(pairs) => {
                out.push('{');
                for (position, (key, value)) in pairs.iter().enumerate() {
                    out.push_str(if position > 0 { ",\n" } else { "\n" });
                    pad(out, indent + 1);
                    quote(out, key)?;
                    out.push_str(": ");
                    value.write(out, indent + 1)?;
                }
                out.push('\n');
                pad(out, indent);
                out.push('}');
            }
        }
        Ok(())
    }

    const fn is_scalar(&self) -> bool {
        !matches!(self, Self::Array(_) | Self::Object(_))
    }
}

impl fmt::Display for Json {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        self.write(&mut out, 0)?;
        formatter.write_str(&out)
    }
}

fn pad(out: &mut String, indent: usize) {
    for _ in 0..indent {
        out.push_str("  ");
    }
}

fn quote(out: &mut String, text: &str) -> fmt::Result {
    out.push('"');
    for character in text.chars() {
        match character {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            control if (control as u32) < 0x20 => write!(out, "\\u{:04x}", control as u32)?,
            other => out.push(other),
        }
    }
    out.push('"');
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Nesting, escapes and scalars come out as valid JSON.
    #[test]
    fn writes_valid_json() {
        let value = Json::object([
            ("a", Json::Number(1)),
            ("b", Json::text("x\"y\n")),
            (
                "c",
                Json::Array(vec![Json::Bool(true), Json::Null, Json::Float(1.25)]),
            ),
            (
                "d",
                Json::Array(vec![Json::object([("e", Json::Float(f64::NAN))])]),
            ),
        ]);
        assert_eq!(
            value.to_string(),
            "{\n  \"a\": 1,\n  \"b\": \"x\\\"y\\n\",\n  \"c\": [true, null, 1.2],\n  \"d\": [\n    {\n      \"e\": null\n    }\n  ]\n}"
        );
    }
}
