//! What a plugin says about one node, and turning a batch of those into the contract's answer.

use std::borrow::Cow;

use crate::Overrides;
use crate::hash::FastMap;
use crate::wit::{self, Answer};

/// The decision for one node.
///
/// Names, reasons and overrides may borrow from the config or the batch (`'a`), so a plugin that
/// hands out the same few outcomes to every node allocates nothing per node; the answer holds each
/// distinct string and each distinct overrides once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision<'a> {
    /// The node does not run the set, for a reason meant for people.
    Skip(Cow<'a, str>),
    /// The node runs the set.
    Run {
        /// One of the set's variants; `None` for the plain template. The SDK passes the name on
        /// as it is; the host rejects an answer naming a variant the set does not declare.
        variant: Option<Cow<'a, str>>,
        /// Changes to the rendered pod. Boxed to keep a decision small: a batch of decisions is
        /// written and read once per node, and most carry no overrides.
        overrides: Option<Box<Cow<'a, Overrides>>>,
    },
}

impl<'a> Decision<'a> {
    /// Run the set's plain template on the node.
    pub fn plain() -> Self {
        Decision::Run {
            variant: None,
            overrides: None,
        }
    }

    /// Run the named variant on the node.
    pub fn variant(name: impl Into<Cow<'a, str>>) -> Self {
        Decision::Run {
            variant: Some(name.into()),
            overrides: None,
        }
    }

    /// Do not run the set on the node, for a reason meant for people.
    pub fn skip(reason: impl Into<Cow<'a, str>>) -> Self {
        Decision::Skip(reason.into())
    }

    /// Adds changes to the rendered pod; a skip stays a skip.
    pub fn with_overrides(self, changes: impl Into<Cow<'a, Overrides>>) -> Self {
        match self {
            Decision::Run { variant, .. } => Decision::Run {
                variant,
                overrides: Some(Box::new(changes.into())),
            },
            skip @ Decision::Skip(_) => skip,
        }
    }

    /// Whether the node does not run the set.
    pub fn is_skip(&self) -> bool {
        matches!(self, Decision::Skip(_))
    }

    /// The reason of a skip.
    pub fn skip_reason(&self) -> Option<&str> {
        match self {
            Decision::Skip(reason) => Some(reason),
            Decision::Run { .. } => None,
        }
    }

    /// The variant a running node gets; `None` for a skip or the plain template.
    pub fn variant_name(&self) -> Option<&str> {
        match self {
            Decision::Run { variant, .. } => variant.as_deref(),
            Decision::Skip(_) => None,
        }
    }

    /// The overrides of a running node.
    pub fn overrides(&self) -> Option<&Overrides> {
        match self {
            Decision::Run { overrides, .. } => overrides.as_ref().map(|changes| &***changes),
            Decision::Skip(_) => None,
        }
    }
}

impl<'a> From<&'a Overrides> for Cow<'a, Overrides> {
    fn from(overrides: &'a Overrides) -> Self {
        Cow::Borrowed(overrides)
    }
}

impl From<Overrides> for Cow<'_, Overrides> {
    fn from(overrides: Overrides) -> Self {
        Cow::Owned(overrides)
    }
}

/// Builds the contract's answer: one decision per given decision, in order, each distinct
/// string and each distinct overrides stored once. It checks nothing, the count included; the
/// host does.
pub fn answer(decisions: &[Decision<'_>]) -> Answer {
    let mut tables = Tables::default();
    let decisions = decisions
        .iter()
        .map(|decision| match decision {
            Decision::Skip(reason) => wit::Decision::Skip(tables.string(reason)),
            Decision::Run { variant, overrides } => wit::Decision::Run(wit::Run {
                variant: variant.as_deref().map(|name| tables.string(name)),
                overrides: overrides.as_ref().map(|changes| tables.overrides(changes)),
            }),
        })
        .collect();
    Answer {
        strings: tables.strings,
        overrides: tables.overrides,
        decisions,
    }
}

/// The answer's tables while they fill.
#[derive(Default)]
struct Tables<'d> {
    strings: Vec<String>,
    string_index: FastMap<&'d str, u32>,
    /// Strings interned, by address and length: decisions mostly borrow their names from the
    /// config, a few addresses that hash faster than the text. Within one borrow of the
    /// decisions, the same address and length mean the same bytes.
    string_by_address: FastMap<(usize, usize), u32>,
    overrides: Vec<Overrides>,
    overrides_index: FastMap<&'d Overrides, u32>,
}

impl<'d> Tables<'d> {
    fn string(&mut self, text: &'d str) -> u32 {
        let address = (text.as_ptr() as usize, text.len());
        if let Some(&index) = self.string_by_address.get(&address) {
            return index;
        }
        let next = self.strings.len() as u32;
        let index = *self.string_index.entry(text).or_insert_with(|| {
            self.strings.push(text.to_owned());
            next
        });
        self.string_by_address.insert(address, index);
        index
    }

    fn overrides(&mut self, changes: &'d Overrides) -> u32 {
        let next = self.overrides.len() as u32;
        *self.overrides_index.entry(changes).or_insert_with(|| {
            self.overrides.push(changes.clone());
            next
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::KeyValue;

    fn pod_label(value: &str) -> Overrides {
        Overrides {
            containers: Vec::new(),
            labels: vec![KeyValue::new("tier", value)],
            annotations: Vec::new(),
        }
    }

    #[test]
    fn the_answer_stores_each_string_and_overrides_once() {
        let gold = pod_label("gold");
        let reason = String::from("too small");
        let decisions = [
            Decision::variant("gpu"),
            Decision::skip(reason.as_str()),
            Decision::variant(String::from("gpu")).with_overrides(&gold),
            Decision::plain().with_overrides(pod_label("gold")),
            Decision::skip("too small"),
            Decision::variant("no-such-variant"),
        ];
        let answer = answer(&decisions);
        assert_eq!(answer.strings, ["gpu", "too small", "no-such-variant"]);
        assert_eq!(answer.overrides, [gold]);
        let run = |variant, overrides| wit::Decision::Run(wit::Run { variant, overrides });
        assert_eq!(
            answer.decisions,
            [
                run(Some(0), None),
                wit::Decision::Skip(1),
                run(Some(0), Some(0)),
                run(None, Some(0)),
                wit::Decision::Skip(1),
                run(Some(2), None),
            ]
        );
    }

    #[test]
    fn decision_constructors_say_what_they_build() {
        assert_eq!(Decision::variant("gpu").variant_name(), Some("gpu"));
        assert_eq!(Decision::plain().variant_name(), None);
        assert!(Decision::skip("no").is_skip());
        assert_eq!(Decision::skip("no").skip_reason(), Some("no"));
        assert!(
            Decision::skip("no")
                .with_overrides(pod_label("x"))
                .is_skip()
        );
    }
}
