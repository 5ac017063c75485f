//! A small element tree read with quick-xml: enough to check a `config.xml` the way
//! Jenkins reads it (which parameters it declares, which plugins its elements come from),
//! and the one well-formedness check every template and (in the fake) every received
//! `config.xml` goes through.

/// An element: its name, attributes, child elements and the text directly inside it
/// (entity and character references resolved).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Element {
    pub name: String,
    pub attrs: Vec<(String, String)>,
    pub children: Vec<Element>,
    pub text: String,
}

impl Element {
    /// The value of attribute `key`.
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The first child element named `name`.
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    /// The element at `path` below this one (each step the first child of that name).
    pub fn at(&self, path: &[&str]) -> Option<&Element> {
        path.iter().try_fold(self, |e, step| e.child(step))
    }

    /// The trimmed text of the child `name`.
    pub fn child_text(&self, name: &str) -> Option<&str> {
        self.child(name).map(|c| c.text.trim())
    }

    /// This element and every element below it, in document order.
    pub fn descendants(&self) -> Vec<&Element> {
        let mut out = vec![self];
        let mut i = 0;
        while i < out.len() {
            let e = out[i];
            out.splice(i + 1..i + 1, e.children.iter());
            i += 1;
        }
        out
    }
}

/// Parses a whole document: exactly one root element, every element closed, attributes
/// well-formed; the first error with its byte position.
pub(crate) fn parse(xml: &str) -> Result<Element, String> {
    use quick_xml::events::Event;

    let mut reader = quick_xml::Reader::from_str(xml);
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let mut roots = 0;
    let at = |r: &quick_xml::Reader<&[u8]>, m: &dyn std::fmt::Display| {
        format!("not well-formed XML at byte {}: {m}", r.buffer_position())
    };
    loop {
        let event = reader.read_event().map_err(|e| {
            format!(
                "not well-formed XML at byte {}: {e}",
                reader.error_position()
            )
        })?;
        match event {
            Event::Eof => break,
            Event::Start(s) => {
                let e = start_element(&s).map_err(|m| at(&reader, &m))?;
                if stack.is_empty() {
                    roots += 1;
                }
                stack.push(e);
            }
            Event::Empty(s) => {
                let e = start_element(&s).map_err(|m| at(&reader, &m))?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(e),
                    None => {
                        roots += 1;
                        root.get_or_insert(e);
                    }
                }
            }
            Event::End(_) => {
                let done = stack
                    .pop()
                    .ok_or_else(|| at(&reader, &"unexpected end tag"))?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(done),
                    None => {
                        root.get_or_insert(done);
                    }
                }
            }
            Event::Text(t) => {
                if let Some(e) = stack.last_mut() {
                    e.text
                        .push_str(&t.xml_content().map_err(|m| at(&reader, &m))?);
                }
            }
            Event::CData(c) => {
                if let Some(e) = stack.last_mut() {
                    e.text.push_str(&c.decode().map_err(|m| at(&reader, &m))?);
                }
            }
            Event::GeneralRef(r) => {
                let resolved = match r.resolve_char_ref().map_err(|m| at(&reader, &m))? {
                    Some(c) => c.to_string(),
                    None => {
                        let name = r.decode().map_err(|m| at(&reader, &m))?;
                        quick_xml::escape::resolve_predefined_entity(&name)
                            .ok_or_else(|| at(&reader, &format!("unknown entity &{name};")))?
                            .to_string()
                    }
                };
                if let Some(e) = stack.last_mut() {
                    e.text.push_str(&resolved);
                }
            }
            _ => {}
        }
    }
    if !stack.is_empty() {
        return Err("not well-formed XML: unclosed element at end of document".into());
    }
    match (root, roots) {
        (Some(r), 1) => Ok(r),
        (_, n) => Err(format!(
            "not well-formed XML: expected one root element, found {n}"
        )),
    }
}

fn start_element(s: &quick_xml::events::BytesStart<'_>) -> Result<Element, String> {
    let name = String::from_utf8_lossy(s.name().as_ref()).into_owned();
    let mut attrs = Vec::new();
    for a in s.attributes() {
        let a = a.map_err(|e| e.to_string())?;
        let key = String::from_utf8_lossy(a.key.as_ref()).into_owned();
        let value = a.unescape_value().map_err(|e| e.to_string())?.into_owned();
        attrs.push((key, value));
    }
    Ok(Element {
        name,
        attrs,
        ..Element::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_elements_attributes_and_text() {
        let root = parse(
            "<?xml version='1.1'?><project><description>a &amp; b &#x41;<![CDATA[<c>]]></description>\
             <w plugin=\"build-timeout@1.33\" x='&quot;'/><p><q>1</q><q>2</q></p></project>",
        )
        .unwrap();
        assert_eq!(root.name, "project");
        assert_eq!(root.child_text("description"), Some("a & b A<c>"));
        let w = root.child("w").unwrap();
        assert_eq!(w.attr("plugin"), Some("build-timeout@1.33"));
        assert_eq!(w.attr("x"), Some("\""));
        assert_eq!(root.at(&["p", "q"]).unwrap().text, "1");
        let names: Vec<&str> = root.descendants().iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["project", "description", "w", "p", "q", "q"]);
    }

    #[test]
    fn refuses_what_is_not_one_well_formed_document() {
        assert!(parse("<a><b></a>").unwrap_err().contains("not well-formed"));
        assert!(
            parse("<a/><b/>")
                .unwrap_err()
                .contains("one root element, found 2")
        );
        assert!(parse("").unwrap_err().contains("found 0"));
        assert!(parse("<a>").unwrap_err().contains("unclosed"));
        assert!(parse("<a x=1/>").unwrap_err().contains("not well-formed"));
        assert!(
            parse("<a>&nope;</a>")
                .unwrap_err()
                .contains("unknown entity")
        );
    }
}
