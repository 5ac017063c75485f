//! The arguments of `stop:<manager>` and `set_description:<manager>` jobs.

use executor_base::{Error, FieldError};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::reader::Reader;

/// `stop:<manager>` arguments: which build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildRef {
    /// The job name.
    pub name: String,
    /// The build number from the start announcement.
    pub number: u64,
}

/// What a `stop:<manager>` job names: a build by its start announcement's
/// `{name, number}` (Zuul's protocol), or, an sdx extension, by the `{uuid}` (`ZUUL_UUID`)
/// of a job whose announcement never reached its submitter (its connection broke before
/// `JOB_CREATED` arrived, so only the uuid is known). A launcher that does not know the
/// extension refuses the second form; sdx's executor sends it to every `stop:` function.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StopTarget {
    /// `{name, number}`.
    Build(BuildRef),
    /// `{uuid}`.
    Uuid {
        /// The job's `ZUUL_UUID` (its Gearman unique id).
        uuid: String,
    },
}

/// Parses `stop:` arguments: `{uuid}` (a non-empty string) when there is a `uuid` and no
/// `name`, else `{name, number}` as [`parse_build_ref`]; names the bad field.
pub fn parse_stop_target(data: &[u8]) -> Result<StopTarget, Error> {
    let v: Value = serde_json::from_slice(data).unwrap_or(Value::Null);
    match (v.get("uuid"), v.get("name")) {
        (Some(u), None) => match u.as_str() {
            Some(uuid) if !uuid.is_empty() => Ok(StopTarget::Uuid {
                uuid: uuid.to_string(),
            }),
            _ => Err(Error::invalid_field("uuid", "must be a non-empty string")),
        },
        _ => parse_build_ref(data).map(StopTarget::Build),
    }
}

/// `set_description:<manager>` arguments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DescriptionRequest {
    /// The job name.
    pub name: String,
    /// The build number.
    pub number: u64,
    /// The description, HTML.
    pub html_description: String,
}

/// Parses `{name, number}` (number as integer or string), naming the bad field.
pub fn parse_build_ref(data: &[u8]) -> Result<BuildRef, Error> {
    let v: Value = serde_json::from_slice(data)
        .map_err(|e| Error::invalid_field("(arguments)", format!("must be a JSON object ({e})")))?;
    let o = v
        .as_object()
        .ok_or_else(|| Error::invalid_field("(arguments)", "must be a JSON object"))?;
    let mut r = Reader::new(o);
    let name = r.string("name", true);
    let number = if r.get("number").is_none() {
        r.errors.push(FieldError::new("number", "is required"));
        None
    } else {
        r.number("number")
    };
    if !r.errors.is_empty() {
        return Err(Error::invalid(r.errors));
    }
    Ok(BuildRef {
        name: name.unwrap_or_default(),
        number: number.unwrap_or_default(),
    })
}

/// Parses `set_description` arguments, naming the bad field.
pub fn parse_description(data: &[u8]) -> Result<DescriptionRequest, Error> {
    let b = parse_build_ref(data);
    let v: Value = serde_json::from_slice(data).unwrap_or(Value::Null);
    let html = v
        .get("html_description")
        .and_then(Value::as_str)
        .map(str::to_string);
    match (b, html) {
        (Ok(b), Some(html_description)) => Ok(DescriptionRequest {
            name: b.name,
            number: b.number,
            html_description,
        }),
        (Ok(_), None) => Err(Error::invalid_field("html_description", "must be a string")),
        (Err(e), html) => {
            let mut fields = e.field_errors().to_vec();
            if html.is_none() && v.is_object() {
                fields.push(FieldError::new("html_description", "must be a string"));
            }
            Err(Error::invalid(fields))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_arguments_are_validated() {
        assert_eq!(
            parse_build_ref(br#"{"name":"unit","number":"5"}"#).unwrap(),
            BuildRef {
                name: "unit".into(),
                number: 5
            }
        );
        let e = parse_build_ref(br#"{"number":0}"#).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid: name: is required; number: must be a positive integer"
        );
        assert_eq!(
            parse_stop_target(br#"{"uuid":"abc"}"#).unwrap(),
            StopTarget::Uuid { uuid: "abc".into() }
        );
        assert_eq!(
            parse_stop_target(br#"{"name":"unit","number":5}"#).unwrap(),
            StopTarget::Build(BuildRef {
                name: "unit".into(),
                number: 5
            })
        );
        let e = parse_stop_target(br#"{"uuid":""}"#).unwrap_err();
        assert_eq!(e.field_errors()[0].field, "uuid");
        let e = parse_stop_target(br#"{"uuid":7}"#).unwrap_err();
        assert_eq!(e.field_errors()[0].field, "uuid");
        assert_eq!(
            serde_json::to_string(&StopTarget::Uuid { uuid: "abc".into() }).unwrap(),
            r#"{"uuid":"abc"}"#
        );
        let e = parse_description(br#"{"name":"unit","number":5}"#).unwrap_err();
        assert_eq!(e.field_errors()[0].field, "html_description");
    }
}
