//! `SERVICE.GROUP[@ORG]`: the one parser of a service group's name, shared by the CLI, the ctl
//! gateway, the HTTP gateway and the census.

use std::fmt;
use std::str::FromStr;

/// A service group: `redis.default`, `redis.default@acme`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceGroup {
    pub service: String,
    pub group: String,
    pub org: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GroupNameError {
    #[error("{0:?} is not a service group: expected SERVICE.GROUP[@ORG]")]
    Shape(String),
    #[error("{what} {part:?} of {text:?}: use 1 to 64 letters, digits, '-' and '_'")]
    Part { what: &'static str, part: String, text: String },
}

/// Habitat's names: letters, digits, `-` and `_`, at most 64 of them.
pub fn is_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

impl ServiceGroup {
    /// From its parts, each checked.
    pub fn new(service: &str, group: &str, org: Option<&str>) -> Result<Self, GroupNameError> {
        let text = match org {
            Some(o) => format!("{service}.{group}@{o}"),
            None => format!("{service}.{group}"),
        };
        let check = |what, part: &str| {
            if is_name(part) {
                Ok(part.to_string())
            } else {
                Err(GroupNameError::Part { what, part: part.to_string(), text: text.clone() })
            }
        };
        Ok(ServiceGroup {
            service: check("service", service)?,
            group: check("group", group)?,
            org: org.map(|o| check("org", o)).transpose()?,
        })
    }

    /// The same group in another org (a supervisor's `--org`), or without one.
    pub fn with_org(&self, org: Option<&str>) -> Result<Self, GroupNameError> {
        ServiceGroup::new(&self.service, &self.group, org)
    }
}

impl FromStr for ServiceGroup {
    type Err = GroupNameError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (sg, org) = match text.split_once('@') {
            Some((sg, org)) => (sg, Some(org)),
            None => (text, None),
        };
        let (service, group) = sg.split_once('.').ok_or_else(|| GroupNameError::Shape(text.to_string()))?;
        ServiceGroup::new(service, group, org)
    }
}

impl fmt::Display for ServiceGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.service, self.group)?;
        if let Some(o) = &self.org {
            write!(f, "@{o}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_bad_ones_say_which_part() {
        for text in ["redis.default", "redis.default@acme", "my-app.prod_2@e2e"] {
            assert_eq!(text.parse::<ServiceGroup>().unwrap().to_string(), text);
        }
        let sg: ServiceGroup = "redis.default@acme".parse().unwrap();
        assert_eq!(
            (sg.service.as_str(), sg.group.as_str(), sg.org.as_deref()),
            ("redis", "default", Some("acme"))
        );
        assert_eq!(sg.with_org(None).unwrap().to_string(), "redis.default");
        assert!(matches!("redis".parse::<ServiceGroup>(), Err(GroupNameError::Shape(_))));
        for (text, what) in
            [("a.b.c", "group"), (".x", "service"), ("x.", "group"), ("x.y@", "org"), ("x y.z", "service")]
        {
            match text.parse::<ServiceGroup>() {
                Err(GroupNameError::Part { what: w, .. }) => assert_eq!(w, what, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
        assert!(ServiceGroup::new(&"a".repeat(65), "default", None).is_err());
    }
}
