//! Parsing and checking a set's JSON config, with messages that name the offending field path.

use std::fmt;

use serde::de::{self, DeserializeOwned, Deserializer, IgnoredAny, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use crate::Decision;
use crate::quantity::parse_quantity;

/// Parses `spec.policy.config` (JSON text) into `T`.
///
/// The error names the field path where parsing failed, e.g.
/// `config: rules[2].when.minMemory: invalid quantity `12Zi`: unknown suffix ...`.
pub fn parse_config<T: DeserializeOwned>(json: &str) -> Result<T, String> {
    let mut deserializer = serde_json::Deserializer::from_str(json);
    let parsed: T = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        // The host hands over JSON it serialized itself from the set, so a line and column in
        // that text mean nothing to the author of the set; the field path says where.
        let position = format!(" at line {} column {}", inner.line(), inner.column());
        let message = inner.to_string();
        let data_message = message.strip_suffix(&position).unwrap_or(&message);
        if json.trim() == "null" {
            "config: this plugin needs a config (spec.policy.config), but none is set".to_owned()
        } else if inner.is_syntax() || inner.is_eof() {
            format!("config: {message}")
        } else if path == "." {
            format!("config: {data_message}")
        } else {
            format!("config: {path}: {data_message}")
        }
    })?;
    deserializer
        .end()
        .map_err(|error| format!("config: {error}"))?;
    Ok(parsed)
}

/// A config type for plugins that take no config: accepts any JSON, `null` included.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NoConfig;

impl<'de> Deserialize<'de> for NoConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        IgnoredAny::deserialize(deserializer).map(|_| NoConfig)
    }
}

/// Checks that `variant` is one the set declares; the error names `path`.
pub fn check_variant(path: &str, variant: &str, variants: &[String]) -> Result<(), String> {
    if variants.iter().any(|declared| declared == variant) {
        return Ok(());
    }
    let declared = if variants.is_empty() {
        "the set declares no variants".to_owned()
    } else {
        let names: Vec<String> = variants.iter().map(|name| format!("`{name}`")).collect();
        format!("the set declares {}", names.join(", "))
    };
    Err(format!(
        "{path}: `{variant}` is not a variant of this set; {declared}"
    ))
}

/// What a node gets, as configs usually spell it: `{"variant": "gpu"}` runs a variant,
/// `{"skip": "reason"}` skips the node, `{}` runs the plain template.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Outcome {
    /// Run this variant.
    pub variant: Option<String>,
    /// Skip the node, with this reason.
    pub skip: Option<String>,
}

impl Outcome {
    /// The decision this outcome gives a node.
    pub fn decision(&self) -> Decision<'_> {
        outcome_decision(self.variant.as_deref(), self.skip.as_deref())
    }

    /// Checks the outcome at `path`; see [`check_outcome`].
    pub fn check(&self, problems: &mut Problems, path: &str, variants: &[String]) {
        check_outcome(
            problems,
            path,
            self.variant.as_deref(),
            self.skip.as_deref(),
            variants,
        );
    }
}

/// The decision for an outcome written as optional `variant` and `skip` fields (a skip wins;
/// neither means the plain template).
pub fn outcome_decision<'a>(variant: Option<&'a str>, skip: Option<&'a str>) -> Decision<'a> {
    match (skip, variant) {
        (Some(reason), _) => Decision::skip(reason),
        (None, Some(variant)) => Decision::variant(variant),
        (None, None) => Decision::plain(),
    }
}

/// Checks an outcome written as optional `variant` and `skip` fields at `path`: not both, a
/// declared variant, a non-empty reason.
pub fn check_outcome(
    problems: &mut Problems,
    path: &str,
    variant: Option<&str>,
    skip: Option<&str>,
    variants: &[String],
) {
    if variant.is_some() && skip.is_some() {
        problems.add(path, "give either `variant` or `skip`, not both");
    }
    if let Some(variant) = variant {
        problems.check(check_variant(&format!("{path}.variant"), variant, variants));
    }
    if skip.is_some_and(|reason| reason.trim().is_empty()) {
        problems.add(format!("{path}.skip"), "give a reason for skipping");
    }
}

/// Collects every problem found while checking a config, so one message can list them all.
#[derive(Debug, Default)]
pub struct Problems(Vec<String>);

impl Problems {
    /// No problems yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a problem at a field path.
    pub fn add(&mut self, path: impl fmt::Display, message: impl fmt::Display) {
        self.0.push(format!("{path}: {message}"));
    }

    /// Records the error of a check, if any.
    pub fn check(&mut self, result: Result<(), String>) {
        if let Err(message) = result {
            self.0.push(message);
        }
    }

    /// `Ok` when nothing was recorded, else every problem, one per line, prefixed by `config:`.
    pub fn finish(self) -> Result<(), String> {
        if self.0.is_empty() {
            return Ok(());
        }
        let lines: Vec<String> = self
            .0
            .into_iter()
            .map(|line| format!("config: {line}"))
            .collect();
        Err(lines.join("\n"))
    }
}

/// A Kubernetes quantity in a config: a string such as `"256Gi"` or `"500m"`, or a JSON number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quantity {
    text: String,
    milli: i64,
}

impl Quantity {
    /// Parses a quantity string.
    pub fn parse(text: &str) -> Result<Self, String> {
        parse_quantity(text).map(|milli| Quantity {
            text: text.to_owned(),
            milli,
        })
    }

    /// The value times 1000, on the scale of `resource.milli-value`.
    pub fn milli_value(&self) -> i64 {
        self.milli
    }

    /// The quantity as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for Quantity {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct QuantityVisitor;

        impl Visitor<'_> for QuantityVisitor {
            type Value = Quantity;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a Kubernetes quantity such as \"256Gi\", \"500m\" or a number")
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<Quantity, E> {
                Quantity::parse(text).map_err(E::custom)
            }

            fn visit_u64<E: de::Error>(self, value: u64) -> Result<Quantity, E> {
                self.visit_str(&value.to_string())
            }

            fn visit_i64<E: de::Error>(self, value: i64) -> Result<Quantity, E> {
                self.visit_str(&value.to_string())
            }

            fn visit_f64<E: de::Error>(self, value: f64) -> Result<Quantity, E> {
                if !value.is_finite() {
                    return Err(E::custom(format!("invalid quantity {value}")));
                }
                self.visit_str(&value.to_string())
            }
        }

        deserializer.deserialize_any(QuantityVisitor)
    }
}

/// One string or a list of strings: `"arm64"` and `["arm64", "amd64"]` both parse.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StringList(pub Vec<String>);

impl StringList {
    /// The strings.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }

    /// Whether `value` is one of the strings.
    pub fn contains(&self, value: &str) -> bool {
        self.0.iter().any(|item| item == value)
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'de> Deserialize<'de> for StringList {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ListVisitor;

        impl<'de> Visitor<'de> for ListVisitor {
            type Value = StringList;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a list of strings")
            }

            fn visit_str<E: de::Error>(self, value: &str) -> Result<StringList, E> {
                Ok(StringList(vec![value.to_owned()]))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<StringList, A::Error> {
                let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
                while let Some(item) = seq.next_element::<String>()? {
                    items.push(item);
                }
                Ok(StringList(items))
            }
        }

        deserializer.deserialize_any(ListVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    struct Outer {
        rules: Vec<Inner>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    struct Inner {
        min_memory: Option<Quantity>,
        arch: Option<StringList>,
    }

    #[test]
    fn parse_errors_name_the_field_path() {
        let error = parse_config::<Outer>(r#"{"rules":[{},{"minMemory":"12Zi"}]}"#).unwrap_err();
        assert!(
            error.starts_with("config: rules[1].minMemory: invalid quantity `12Zi`"),
            "{error}"
        );
        assert!(!error.contains("line 1"), "{error}");
        let error = parse_config::<Outer>(r#"{"rules":[{"minMemroy":"1Gi"}]}"#).unwrap_err();
        assert!(error.contains("rules[0]"), "{error}");
        assert!(error.contains("unknown field `minMemroy`"), "{error}");
    }

    #[test]
    fn null_config_gets_a_message_saying_a_config_is_needed() {
        let error = parse_config::<Outer>("null").unwrap_err();
        assert!(error.contains("needs a config"), "{error}");
    }

    #[test]
    fn trailing_garbage_and_syntax_errors_are_reported() {
        assert!(parse_config::<Outer>(r#"{"rules":[]} x"#).is_err());
        let error = parse_config::<Outer>(r#"{"rules":["#).unwrap_err();
        assert!(error.starts_with("config: "), "{error}");
    }

    #[test]
    fn string_lists_accept_one_string_or_many() {
        let one: Outer = parse_config(r#"{"rules":[{"arch":"arm64"}]}"#).unwrap();
        let many: Outer = parse_config(r#"{"rules":[{"arch":["arm64","amd64"]}]}"#).unwrap();
        assert_eq!(one.rules[0].arch, Some(StringList(vec!["arm64".into()])));
        assert_eq!(
            many.rules[0].arch.as_ref().map(|list| list.0.len()),
            Some(2)
        );
    }

    #[test]
    fn quantities_accept_strings_and_numbers() {
        let parsed: Outer =
            parse_config(r#"{"rules":[{"minMemory":1024},{"minMemory":"1Ki"}]}"#).unwrap();
        assert_eq!(
            parsed.rules[0].min_memory.as_ref().unwrap().milli_value(),
            1_024_000
        );
        assert_eq!(
            parsed.rules[1].min_memory.as_ref().unwrap().milli_value(),
            1_024_000
        );
    }

    #[test]
    fn no_config_accepts_anything() {
        assert_eq!(parse_config::<NoConfig>("null"), Ok(NoConfig));
        assert_eq!(parse_config::<NoConfig>(r#"{"a":[1,2]}"#), Ok(NoConfig));
    }

    #[test]
    fn unknown_variants_are_named_with_the_declared_ones() {
        let variants = vec!["gpu".to_owned(), "arm".to_owned()];
        assert_eq!(check_variant("default.variant", "gpu", &variants), Ok(()));
        let error = check_variant("rules[0].variant", "large", &variants).unwrap_err();
        assert_eq!(
            error,
            "rules[0].variant: `large` is not a variant of this set; the set declares `gpu`, `arm`"
        );
    }
}
