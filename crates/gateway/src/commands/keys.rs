//! Where a command's keys are, from the master's own `COMMAND` reply: the
//! key specs of Redis 7 (and Valkey), which also find the keys of commands
//! whose positions depend on their arguments (`EVAL`'s numkeys, `XREAD`'s
//! `STREAMS`), else the legacy first/last/step triple. A Cluster backend
//! routes by these keys' hash slot; nothing else needs them.

use belay_resp::{Request, Value};
use smallvec::SmallVec;

/// A command's key positions: most commands have a few, kept inline (no
/// allocation per command on the cluster's hot path).
pub type KeyPositions = SmallVec<[usize; 4]>;

/// Where one group of keys starts.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Begin {
    /// At this argument (the command's name is argument 0).
    Index(usize),
    /// After this keyword, searched from `from` (negative: from the end,
    /// backwards).
    Keyword { keyword: Vec<u8>, from: i64 },
}

/// Which arguments from there on are keys.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Find {
    /// Up to `last` (negative: from the end); every `step`th; with `limit`
    /// > 1, only the first 1/limit of what is left.
    Range { last: i64, step: usize, limit: i64 },
    /// The number of keys is the argument at `numidx` (after the begin);
    /// the first key is at `first` after it.
    KeyNum {
        numidx: usize,
        first: usize,
        step: usize,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct KeySpec {
    begin: Begin,
    find: Find,
}

/// How to find a command's keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyFinder {
    specs: Vec<KeySpec>,
}

impl KeyFinder {
    /// From one `COMMAND` entry: its key specs (element 8) when it has
    /// any, else first key, last key and step (elements 3–5).
    pub fn from_entry(items: &[Value]) -> KeyFinder {
        let from_specs: Vec<KeySpec> = items
            .get(8)
            .and_then(|v| v.as_array())
            .unwrap_or_default()
            .iter()
            .filter_map(parse_spec)
            .collect();
        if !from_specs.is_empty() {
            return KeyFinder { specs: from_specs };
        }
        let int = |i: usize| items.get(i).and_then(|v| v.as_int()).unwrap_or(0);
        let (first, last, step) = (int(3), int(4), int(5));
        if first <= 0 || step <= 0 {
            return KeyFinder::default();
        }
        let last = if last < 0 { last } else { last - first };
        KeyFinder {
            specs: vec![KeySpec {
                begin: Begin::Index(first as usize),
                find: Find::Range {
                    last,
                    step: step as usize,
                    limit: 0,
                },
            }],
        }
    }

    /// The positions of `req`'s keys, in argument order per spec. Positions
    /// past the end (a malformed command) are left out: the node will
    /// refuse the command itself.
    pub fn positions(&self, req: &Request) -> KeyPositions {
        let argc = req.argc();
        let mut out = KeyPositions::new();
        for spec in &self.specs {
            let Some(begin) = spec.begin.find(req) else {
                continue;
            };
            spec.find.positions(begin, argc, req, &mut out);
        }
        out
    }
}

impl Begin {
    fn find(&self, req: &Request) -> Option<usize> {
        let argc = req.argc() as i64;
        match self {
            Begin::Index(i) => Some(*i),
            Begin::Keyword { keyword, from } => {
                let matches = |i: i64| {
                    req.arg(i as usize)
                        .is_some_and(|a| a.eq_ignore_ascii_case(keyword))
                };
                if *from >= 0 {
                    (*from..argc).find(|&i| matches(i)).map(|i| i as usize + 1)
                } else {
                    let start = argc + from;
                    (1..=start)
                        .rev()
                        .find(|&i| matches(i))
                        .map(|i| i as usize + 1)
                }
            }
        }
    }
}

impl Find {
    fn positions(&self, begin: usize, argc: usize, req: &Request, out: &mut KeyPositions) {
        if begin >= argc {
            return;
        }
        let (first, last, step) = match *self {
            Find::Range { last, step, limit } => {
                let last = if last >= 0 {
                    begin as i64 + last
                } else if limit <= 1 {
                    argc as i64 + last
                } else {
                    begin as i64 + (argc as i64 - begin as i64) / limit + last
                };
                (begin, last, step)
            }
            Find::KeyNum {
                numidx,
                first,
                step,
            } => {
                let Some(n) = req
                    .arg(begin + numidx)
                    .and_then(|a| std::str::from_utf8(a).ok())
                    .and_then(|s| s.parse::<i64>().ok())
                    .filter(|n| *n >= 0)
                else {
                    return;
                };
                let first = begin + first;
                (first, first as i64 + (n - 1) * step as i64, step)
            }
        };
        let last = last.min(argc as i64 - 1);
        let mut i = first as i64;
        while i <= last {
            out.push(i as usize);
            i += step.max(1) as i64;
        }
    }
}

fn int(v: &Value, name: &str) -> Option<i64> {
    v.field(name)?.as_int()
}

fn parse_spec(v: &Value) -> Option<KeySpec> {
    let begin = v.field("begin_search")?;
    let find = v.field("find_keys")?;
    let begin_spec = begin.field("spec")?;
    let begin = match begin.field("type")?.as_str()? {
        "index" => Begin::Index(usize::try_from(int(begin_spec, "index")?).ok()?),
        "keyword" => Begin::Keyword {
            keyword: begin_spec
                .field("keyword")?
                .as_str()?
                .as_bytes()
                .to_ascii_lowercase(),
            from: int(begin_spec, "startfrom")?,
        },
        _ => return None,
    };
    let find_spec = find.field("spec")?;
    let find = match find.field("type")?.as_str()? {
        "range" => Find::Range {
            last: int(find_spec, "lastkey")?,
            step: usize::try_from(int(find_spec, "keystep")?).ok()?,
            limit: int(find_spec, "limit")?,
        },
        "keynum" => Find::KeyNum {
            numidx: usize::try_from(int(find_spec, "keynumidx")?).ok()?,
            first: usize::try_from(int(find_spec, "firstkey")?).ok()?,
            step: usize::try_from(int(find_spec, "keystep")?).ok()?,
        },
        _ => return None,
    };
    Some(KeySpec { begin, find })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn s(x: &str) -> Value {
        Value::Bulk(Bytes::copy_from_slice(x.as_bytes()))
    }

    fn flat(pairs: Vec<(&str, Value)>) -> Value {
        Value::Array(pairs.into_iter().flat_map(|(k, v)| [s(k), v]).collect())
    }

    fn spec(begin: Value, find: Value) -> Value {
        flat(vec![
            ("flags", Value::Array(vec![])),
            ("begin_search", begin),
            ("find_keys", find),
        ])
    }

    fn index(i: i64) -> Value {
        flat(vec![
            ("type", s("index")),
            ("spec", flat(vec![("index", Value::Integer(i))])),
        ])
    }

    fn range(last: i64, step: i64, limit: i64) -> Value {
        flat(vec![
            ("type", s("range")),
            (
                "spec",
                flat(vec![
                    ("lastkey", Value::Integer(last)),
                    ("keystep", Value::Integer(step)),
                    ("limit", Value::Integer(limit)),
                ]),
            ),
        ])
    }

    fn finder(specs: Vec<Value>) -> KeyFinder {
        let mut items = vec![Value::Nil; 8];
        items.push(Value::Array(specs));
        KeyFinder::from_entry(&items)
    }

    fn keys(f: &KeyFinder, cmd: &str) -> Vec<String> {
        let req = Request::from_args(cmd.split(' '));
        f.positions(&req)
            .into_iter()
            .map(|i| String::from_utf8_lossy(req.arg(i).unwrap()).into_owned())
            .collect()
    }

    #[test]
    fn ranges_steps_and_the_end() {
        let get = finder(vec![spec(index(1), range(0, 1, 0))]);
        assert_eq!(keys(&get, "GET a"), ["a"]);
        let mget = finder(vec![spec(index(1), range(-1, 1, 0))]);
        assert_eq!(keys(&mget, "MGET a b c"), ["a", "b", "c"]);
        let mset = finder(vec![spec(index(1), range(-1, 2, 0))]);
        assert_eq!(keys(&mset, "MSET a 1 b 2"), ["a", "b"]);
        // A command cut short names no key past its end.
        assert_eq!(keys(&get, "GET"), Vec::<String>::new());
    }

    #[test]
    fn numkeys_and_keywords() {
        let numkeys = flat(vec![
            ("type", s("keynum")),
            (
                "spec",
                flat(vec![
                    ("keynumidx", Value::Integer(0)),
                    ("firstkey", Value::Integer(1)),
                    ("keystep", Value::Integer(1)),
                ]),
            ),
        ]);
        let eval = finder(vec![spec(index(2), numkeys)]);
        assert_eq!(keys(&eval, "EVAL s 2 k1 k2 a1"), ["k1", "k2"]);
        assert_eq!(keys(&eval, "EVAL s 0 a1"), Vec::<String>::new());
        let streams = flat(vec![
            ("type", s("keyword")),
            (
                "spec",
                flat(vec![
                    ("keyword", s("STREAMS")),
                    ("startfrom", Value::Integer(1)),
                ]),
            ),
        ]);
        let xread = finder(vec![spec(streams, range(-1, 1, 2))]);
        assert_eq!(
            keys(&xread, "XREAD COUNT 2 STREAMS s1 s2 0 0"),
            ["s1", "s2"]
        );
    }

    #[test]
    fn legacy_triples_when_there_are_no_specs() {
        let items = vec![
            s("mset"),
            Value::Integer(-3),
            Value::Array(vec![]),
            Value::Integer(1),
            Value::Integer(-1),
            Value::Integer(2),
        ];
        let f = KeyFinder::from_entry(&items);
        assert_eq!(keys(&f, "MSET a 1 b 2"), ["a", "b"]);
        let none = KeyFinder::from_entry(&[s("ping"), Value::Integer(-1)]);
        assert!(keys(&none, "PING x").is_empty());
    }
}
