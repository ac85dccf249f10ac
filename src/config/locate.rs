//! Maps a field path such as `services[1].kind` to its line and column in a YAML text.
//!
//! serde_yaml reports positions for syntax and type errors only; checks that run after
//! deserialisation (unknown kind, duplicate name …) use this index to point at the value.

use std::collections::{HashMap, HashSet};

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// A 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

/// Positions of every node in a YAML document, by field path.
#[derive(Debug, Default)]
pub struct Locator {
    positions: HashMap<String, Position>,
    /// Where each mapping key is written, by the path of its value.
    keys: HashMap<String, Position>,
    /// The first key written twice in one mapping: its path and the second occurrence.
    duplicate: Option<(String, Position)>,
}

impl Locator {
    pub fn new(text: &str) -> Self {
        let mut builder = Builder::default();
        // A document that does not parse has no positions; serde_yaml reports that error.
        let _ = Parser::new_from_str(text).load(&mut builder, false);
        Locator { positions: builder.positions, keys: builder.keys, duplicate: builder.duplicate }
    }

    /// The position of the key of the field at `path` (an unknown field is its key), else of
    /// the nearest ancestor that exists.
    pub fn find_key(&self, path: &str) -> Option<Position> {
        self.keys.get(path).copied().or_else(|| self.find(path))
    }

    /// The first key a mapping holds twice, at its second occurrence.
    pub fn duplicate_key(&self) -> Option<&(String, Position)> {
        self.duplicate.as_ref()
    }

    /// The position of the node at `path`, or of its nearest ancestor that exists.
    pub fn find(&self, path: &str) -> Option<Position> {
        let mut path = path;
        loop {
            if let Some(position) = self.positions.get(path) {
                return Some(*position);
            }
            let cut = path.rfind(['.', '['])?;
            path = &path[..cut];
        }
    }
}

enum Frame {
    Mapping { path: String, key: Option<String>, seen: HashSet<String> },
    Sequence { path: String, index: usize },
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    positions: HashMap<String, Position>,
    keys: HashMap<String, Position>,
    duplicate: Option<(String, Position)>,
}

impl Builder {
    /// The path of the node that the next event starts, or `None` for a mapping key.
    fn next_path(&mut self) -> Option<String> {
        match self.stack.last_mut() {
            None => Some(String::new()),
            Some(Frame::Mapping { key: None, .. }) => None,
            Some(Frame::Mapping { path, key: Some(key), .. }) => {
                let child = join(path, key);
                if let Some(Frame::Mapping { key, .. }) = self.stack.last_mut() {
                    *key = None;
                }
                Some(child)
            }
            Some(Frame::Sequence { path, index }) => {
                let child = format!("{path}[{index}]");
                *index += 1;
                Some(child)
            }
        }
    }

    fn record(&mut self, path: &str, mark: Marker) {
        self.positions.insert(path.to_string(), Position { line: mark.line(), column: mark.col() + 1 });
    }
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() { key.to_string() } else { format!("{parent}.{key}") }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, event: Event, mark: Marker) {
        match event {
            Event::Scalar(value, ..) => match self.next_path() {
                Some(path) => self.record(&path, mark),
                None => {
                    let position = Position { line: mark.line(), column: mark.col() + 1 };
                    if let Some(Frame::Mapping { path, key, seen }) = self.stack.last_mut() {
                        let field = join(path, &value);
                        if !seen.insert(value.clone()) && self.duplicate.is_none() {
                            self.duplicate = Some((field.clone(), position));
                        }
                        self.keys.entry(field).or_insert(position);
                        *key = Some(value);
                    }
                }
            },
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                // A complex mapping key is not used by devenv's files; index it under "?".
                let path = self.next_path().unwrap_or_else(|| "?".to_string());
                self.record(&path, mark);
                self.stack.push(if matches!(event, Event::MappingStart(..)) {
                    Frame::Mapping { path, key: None, seen: HashSet::new() }
                } else {
                    Frame::Sequence { path, index: 0 }
                });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            Event::Alias(_) => {
                self.next_path();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "project: shop\nservices:\n  - name: db\n    kind: rds-mariadb\n  - name: cache\n    kind: redis\n    keys:\n      HOST: host\n";

    #[test]
    fn finds_nested_values() {
        let locator = Locator::new(TEXT);
        assert_eq!(locator.find("project"), Some(Position { line: 1, column: 10 }));
        assert_eq!(locator.find("services[1].kind"), Some(Position { line: 6, column: 11 }));
        assert_eq!(locator.find("services[1].keys.HOST"), Some(Position { line: 8, column: 13 }));
    }

    #[test]
    fn finds_keys_and_the_second_of_two_twins() {
        let locator = Locator::new(TEXT);
        assert_eq!(locator.find_key("services[1].kind"), Some(Position { line: 6, column: 5 }));
        assert_eq!(locator.find_key("services[1].version"), locator.find("services[1]"), "an absent key");
        assert_eq!(locator.duplicate_key(), None);
        let twins = Locator::new("project: shop\nservices: []\nproject: other\n");
        assert_eq!(twins.duplicate_key(), Some(&("project".to_string(), Position { line: 3, column: 1 })));
    }

    #[test]
    fn falls_back_to_the_nearest_ancestor() {
        let locator = Locator::new(TEXT);
        assert_eq!(locator.find("services[0].version"), locator.find("services[0]"));
        assert_eq!(locator.find("nothing.here"), None);
    }
}
