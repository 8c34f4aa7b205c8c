//! Parsing of Query API parameters (`application/x-www-form-urlencoded` bodies and URL query
//! strings) and typed access to them the way botocore serializes them: `Name.member.N` lists
//! (1-based, not flattened) and `Parent.Child` structures.
//!
//! Everything here is strict on purpose. Bad percent-escapes, non-UTF-8 text, a key given twice,
//! indices that are zero, padded, out of range or leave gaps are all answered with a 400 instead
//! of being guessed at, and counts are bounded so that no request can make the server allocate
//! without limit.

use std::collections::BTreeMap;

use crate::error::{ApiError, ErrorCode};

/// Most parameters one request may carry.
const MAX_PARAMS: usize = 4096;
/// Highest list index accepted (`.member.1000`); a list cannot be longer than this.
const MAX_LIST_MEMBERS: usize = 1000;
/// Longest parameter name accepted.
const MAX_KEY_LEN: usize = 256;

fn malformed(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::MalformedQueryString, message)
}

/// Percent-decodes one component with SigV4's strict rules (`elb_sigv4::encoding`);
/// `plus_is_space` follows the form encoding, where `+` is a space.
pub fn percent_decode(input: &[u8], plus_is_space: bool) -> Result<String, ApiError> {
    use elb_sigv4::encoding::DecodeError;
    elb_sigv4::encoding::percent_decode(input, plus_is_space).map_err(|e| match e {
        DecodeError::BadEscape => malformed("Malformed percent-encoding in the request"),
        DecodeError::NotUtf8 => malformed("Request parameters must be valid UTF-8"),
    })
}

/// The request's parameters by name.
#[derive(Debug, Default, Clone)]
pub struct Params {
    map: BTreeMap<String, String>,
}

/// List members by index: (field suffix, value) pairs of each (`""` for plain values).
type MembersByIndex = BTreeMap<usize, Vec<(String, String)>>;

/// One member of a list of structures: field name -> value.
pub type Member = BTreeMap<String, String>;

impl Params {
    /// Adds every `key=value` pair of a form-encoded string. A key given twice (here or in an
    /// earlier call) is an error: the Query protocol never repeats one.
    pub fn extend_from_urlencoded(&mut self, input: &[u8]) -> Result<(), ApiError> {
        for pair in input.split(|&b| b == b'&') {
            if pair.is_empty() {
                continue;
            }
            let (raw_key, raw_value) = match pair.iter().position(|&b| b == b'=') {
                Some(eq) => (&pair[..eq], &pair[eq + 1..]),
                None => (pair, &[][..]),
            };
            let key = percent_decode(raw_key, true)?;
            let value = percent_decode(raw_value, true)?;
            if key.is_empty() {
                return Err(malformed("Empty parameter name"));
            }
            if key.len() > MAX_KEY_LEN {
                return Err(malformed("Parameter name too long"));
            }
            if self.map.len() >= MAX_PARAMS {
                return Err(malformed(format!(
                    "Too many parameters (at most {MAX_PARAMS})"
                )));
            }
            if self.map.contains_key(&key) {
                return Err(malformed(format!("Parameter {key} appears more than once")));
            }
            self.map.insert(key, value);
        }
        Ok(())
    }

    pub fn from_urlencoded(input: &[u8]) -> Result<Self, ApiError> {
        let mut params = Self::default();
        params.extend_from_urlencoded(input)?;
        Ok(params)
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.map.get(name).map(String::as_str)
    }

    /// Names of the parameters that start with `prefix`.
    pub fn keys_with_prefix<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.map
            .range(prefix.to_string()..)
            .take_while(move |(k, _)| k.starts_with(prefix))
            .map(|(k, _)| k.as_str())
    }

    pub fn contains(&self, name: &str) -> bool {
        self.map.contains_key(name)
    }

    /// A parameter that must be present and non-empty.
    pub fn required(&self, name: &str) -> Result<&str, ApiError> {
        match self.get(name) {
            Some(v) if !v.is_empty() => Ok(v),
            _ => Err(ApiError::missing(name)),
        }
    }

    /// An integer parameter within `[min, max]`.
    pub fn int(&self, name: &str, min: i64, max: i64) -> Result<Option<i64>, ApiError> {
        let Some(text) = self.get(name) else {
            return Ok(None);
        };
        parse_int(name, text, min, max).map(Some)
    }

    pub fn required_int(&self, name: &str, min: i64, max: i64) -> Result<i64, ApiError> {
        self.int(name, min, max)?
            .ok_or_else(|| ApiError::missing(name))
    }

    /// A `true`/`false` parameter.
    pub fn boolean(&self, name: &str) -> Result<Option<bool>, ApiError> {
        let Some(text) = self.get(name) else {
            return Ok(None);
        };
        parse_bool(name, text).map(Some)
    }

    /// The indices and suffixes of `prefix.member.N[.suffix]` keys, checked: `N` is a canonical
    /// decimal in 1..=MAX_LIST_MEMBERS. Returns `None` when the list is absent altogether, and
    /// an empty list for botocore's empty-list form `prefix=`.
    fn members(&self, prefix: &str) -> Result<Option<MembersByIndex>, ApiError> {
        let dotted = format!("{prefix}.");
        let mut found = MembersByIndex::new();
        let mut any = false;
        for (key, value) in self.map.range(dotted.clone()..) {
            let Some(rest) = key.strip_prefix(&dotted) else {
                break;
            };
            any = true;
            let Some(rest) = rest.strip_prefix("member.") else {
                return Err(ApiError::validation(format!(
                    "Invalid parameter {key}: list members are named {prefix}.member.N"
                )));
            };
            let (index_text, suffix) = match rest.find('.') {
                Some(dot) => (&rest[..dot], &rest[dot + 1..]),
                None => (rest, ""),
            };
            let index = parse_index(key, index_text)?;
            found
                .entry(index)
                .or_default()
                .push((suffix.to_string(), value.clone()));
        }
        if !any {
            return Ok(match self.get(prefix) {
                Some("") => Some(BTreeMap::new()),
                Some(_) => {
                    return Err(ApiError::validation(format!(
                        "Invalid parameter {prefix}: expected a list ({prefix}.member.N)"
                    )));
                }
                None => None,
            });
        }
        // botocore numbers members 1..=n; a gap means members were lost or invented.
        if let Some((&last, _)) = found.last_key_value()
            && last != found.len()
        {
            return Err(ApiError::validation(format!(
                "List {prefix} must be numbered contiguously from {prefix}.member.1"
            )));
        }
        Ok(Some(found))
    }

    /// A list of plain values: `prefix.member.N`.
    pub fn string_list(&self, prefix: &str) -> Result<Option<Vec<String>>, ApiError> {
        let Some(members) = self.members(prefix)? else {
            return Ok(None);
        };
        members
            .into_values()
            .map(|mut fields| match (fields.len(), fields.pop()) {
                (1, Some((suffix, value))) if suffix.is_empty() => Ok(value),
                _ => Err(ApiError::validation(format!(
                    "Invalid parameter in {prefix}: members of this list are plain values"
                ))),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    /// A list of structures: `prefix.member.N.Field` for each of `fields`. Other fields are an
    /// error rather than silently dropped.
    pub fn struct_list(
        &self,
        prefix: &str,
        fields: &[&str],
    ) -> Result<Option<Vec<Member>>, ApiError> {
        let Some(members) = self.members(prefix)? else {
            return Ok(None);
        };
        let mut out = Vec::with_capacity(members.len());
        for (index, entries) in members {
            let mut member = Member::new();
            for (field, value) in entries {
                if !fields.contains(&field.as_str()) {
                    return Err(ApiError::validation(format!(
                        "Unknown parameter {prefix}.member.{index}.{field}"
                    )));
                }
                member.insert(field, value);
            }
            out.push(member);
        }
        Ok(Some(out))
    }
}

fn parse_index(key: &str, text: &str) -> Result<usize, ApiError> {
    let canonical = !text.is_empty()
        && text.len() <= 7
        && text.bytes().all(|b| b.is_ascii_digit())
        && !text.starts_with('0');
    let index = if canonical {
        text.parse::<usize>().ok()
    } else {
        None
    };
    match index {
        Some(i) if (1..=MAX_LIST_MEMBERS).contains(&i) => Ok(i),
        _ => Err(ApiError::validation(format!(
            "Invalid list index in parameter {key}: indices run from 1 to {MAX_LIST_MEMBERS}"
        ))),
    }
}

/// Parses a decimal integer within `[min, max]`, with a ValidationError naming the parameter.
pub fn parse_int(name: &str, text: &str, min: i64, max: i64) -> Result<i64, ApiError> {
    let value: i64 = text.trim().parse().map_err(|_| {
        ApiError::validation(format!(
            "Value '{text}' for parameter {name} is not a valid integer"
        ))
    })?;
    if value < min || value > max {
        return Err(ApiError::validation(format!(
            "Value {value} for parameter {name} must be between {min} and {max}"
        )));
    }
    Ok(value)
}

pub fn parse_bool(name: &str, text: &str) -> Result<bool, ApiError> {
    if text.eq_ignore_ascii_case("true") {
        Ok(true)
    } else if text.eq_ignore_ascii_case("false") {
        Ok(false)
    } else {
        Err(ApiError::validation(format!(
            "Value '{text}' for parameter {name} must be true or false"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Params, ApiError> {
        Params::from_urlencoded(s.as_bytes())
    }

    #[test]
    fn decodes_form_encoding() {
        let p = parse("Action=CreateLoadBalancer&A=b+c%2Bd&Empty=&Flag").unwrap();
        assert_eq!(p.get("Action"), Some("CreateLoadBalancer"));
        assert_eq!(p.get("A"), Some("b c+d"));
        assert_eq!(p.get("Empty"), Some(""));
        assert_eq!(p.get("Flag"), Some(""));
        assert_eq!(p.get("Nope"), None);
        assert_eq!(parse("T=%C3%A9").unwrap().get("T"), Some("é"));
    }

    #[test]
    fn rejects_bad_encodings_and_duplicates() {
        for bad in ["A=%zz", "A=%4", "A=%", "A=%FF", "%C3=1", "A=1&A=2", "=x"] {
            let err = parse(bad).unwrap_err();
            assert_eq!(err.code, ErrorCode::MalformedQueryString, "{bad}");
        }
        let err = Params::from_urlencoded(b"A=\xff").unwrap_err();
        assert_eq!(err.code, ErrorCode::MalformedQueryString);
    }

    #[test]
    fn bounds_parameter_count() {
        let many: Vec<String> = (0..=MAX_PARAMS).map(|i| format!("K{i}=v")).collect();
        let err = parse(&many.join("&")).unwrap_err();
        assert_eq!(err.code, ErrorCode::MalformedQueryString);
    }

    #[test]
    fn string_lists() {
        let gap = parse("Names.member.2=b&Names.member.1=a&Names.member.10=j").unwrap();
        assert!(
            gap.string_list("Names").is_err(),
            "gap between 2 and 10 must be rejected"
        );
        let p = parse("Names.member.2=b&Names.member.1=a&Other=1").unwrap();
        assert_eq!(
            p.string_list("Names").unwrap(),
            Some(vec!["a".into(), "b".into()])
        );
        assert_eq!(p.string_list("Missing").unwrap(), None);
        let p = parse("Names=").unwrap();
        assert_eq!(p.string_list("Names").unwrap(), Some(vec![]));
    }

    #[test]
    fn list_indices_are_strict() {
        for bad in [
            "L.member.0=x",
            "L.member.01=x",
            "L.member.99999999=x",
            "L.member.1001=x",
            "L.member.-1=x",
            "L.member.=x",
            "L.member.a=x",
            "L.1=x",
            "L=x",
        ] {
            let err = parse(bad).unwrap().string_list("L").unwrap_err();
            assert_eq!(err.code, ErrorCode::ValidationError, "{bad}");
        }
        let ok = parse("L.member.1000=x").unwrap().string_list("L");
        assert!(ok.is_err(), "a list holding only member 1000 has a gap");
    }

    #[test]
    fn struct_lists() {
        let p = parse(
            "Listeners.member.1.Protocol=HTTP&Listeners.member.1.LoadBalancerPort=80\
             &Listeners.member.2.Protocol=tcp",
        )
        .unwrap();
        let l = p
            .struct_list("Listeners", &["Protocol", "LoadBalancerPort"])
            .unwrap()
            .unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(l[0]["LoadBalancerPort"], "80");
        assert_eq!(l[1]["Protocol"], "tcp");
        assert!(!l[1].contains_key("LoadBalancerPort"));
        let err = p.struct_list("Listeners", &["Protocol"]).unwrap_err();
        assert_eq!(err.code, ErrorCode::ValidationError);
    }

    #[test]
    fn integers_and_booleans() {
        let p = parse("I=42&Big=99999999999999999999&B=TRUE&X=yes").unwrap();
        assert_eq!(p.int("I", 1, 100).unwrap(), Some(42));
        assert!(p.int("I", 1, 10).is_err());
        assert!(p.int("Big", 0, i64::MAX).is_err());
        assert_eq!(p.boolean("B").unwrap(), Some(true));
        assert!(p.boolean("X").is_err());
        assert_eq!(
            p.required("Nope").unwrap_err().code,
            ErrorCode::MissingParameter
        );
    }
}
