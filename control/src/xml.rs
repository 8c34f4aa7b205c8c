//! A small XML writer for the Query API's response documents.
//!
//! The shapes are fixed by botocore's model, so a writer that emits elements in the order the
//! handlers call it is all that is needed; escaping is the only subtle part.

/// The ELB 2012-06-01 XML namespace (botocore ignores it, other clients may not).
const NAMESPACE: &str = "http://elasticloadbalancing.amazonaws.com/doc/2012-06-01/";

/// Builds one XML document.
#[derive(Debug, Default)]
pub struct XmlWriter {
    out: String,
}

impl XmlWriter {
    pub fn new() -> Self {
        Self {
            out: String::with_capacity(512),
        }
    }

    pub fn into_string(self) -> String {
        self.out
    }

    /// `<tag>` ... `</tag>` around whatever `body` writes.
    pub fn elem(&mut self, tag: &str, body: impl FnOnce(&mut Self)) {
        self.out.push('<');
        self.out.push_str(tag);
        self.out.push('>');
        body(self);
        self.out.push_str("</");
        self.out.push_str(tag);
        self.out.push('>');
    }

    /// `<tag>text</tag>`, escaped.
    pub fn text(&mut self, tag: &str, text: &str) {
        self.elem(tag, |w| escape_into(&mut w.out, text));
    }

    /// `<tag>text</tag>` when there is a value; nothing otherwise.
    pub fn opt_text(&mut self, tag: &str, text: Option<&str>) {
        if let Some(text) = text {
            self.text(tag, text);
        }
    }

    /// A number or any `Display` value, which needs no escaping.
    pub fn num(&mut self, tag: &str, value: impl std::fmt::Display) {
        self.text(tag, &value.to_string());
    }

    /// `true`/`false`, as the Query protocol writes booleans.
    pub fn boolean(&mut self, tag: &str, value: bool) {
        self.text(tag, if value { "true" } else { "false" });
    }

    /// A Query-protocol list: `<tag><member>..</member>...</tag>`.
    pub fn list<T>(
        &mut self,
        tag: &str,
        items: impl IntoIterator<Item = T>,
        mut member: impl FnMut(&mut Self, T),
    ) {
        self.elem(tag, |w| {
            for item in items {
                w.elem("member", |w| member(w, item));
            }
        });
    }

    /// A list of plain strings.
    pub fn string_list<'a>(&mut self, tag: &str, items: impl IntoIterator<Item = &'a str>) {
        self.list(tag, items, |w, s| escape_into(&mut w.out, s));
    }
}

/// Writes `text` with the five XML specials escaped. Characters XML 1.0 cannot carry at all
/// (most C0 controls, lone surrogates cannot occur in a `str`) become U+FFFD, so that a stored
/// value can never make a response unparseable.
fn escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
}

/// A success document: `<{action}Response><{action}Result>..</..><ResponseMetadata>..`.
pub fn response_document(
    action: &str,
    request_id: &str,
    result: impl FnOnce(&mut XmlWriter),
) -> String {
    response_document_in(NAMESPACE, action, request_id, result)
}

/// [`response_document`] in another service's namespace (IAM's for its actions).
pub fn response_document_in(
    namespace: &str,
    action: &str,
    request_id: &str,
    result: impl FnOnce(&mut XmlWriter),
) -> String {
    let mut w = XmlWriter::new();
    w.out
        .push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let root = format!("{action}Response");
    w.out.push_str(&format!("<{root} xmlns=\"{namespace}\">"));
    w.elem(&format!("{action}Result"), result);
    w.elem("ResponseMetadata", |w| w.text("RequestId", request_id));
    w.out.push_str(&format!("</{root}>\n"));
    w.into_string()
}

/// The Query protocol's error document (`ErrorResponse/Error/{Type,Code,Message}` + RequestId).
pub fn error_document(fault: &str, code: &str, message: &str, request_id: &str) -> String {
    let mut w = XmlWriter::new();
    w.out
        .push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    w.out
        .push_str(&format!("<ErrorResponse xmlns=\"{NAMESPACE}\">"));
    w.elem("Error", |w| {
        w.text("Type", fault);
        w.text("Code", code);
        w.text("Message", message);
    });
    w.text("RequestId", request_id);
    w.out.push_str("</ErrorResponse>\n");
    w.into_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_specials_and_replaces_unrepresentable() {
        let mut out = String::new();
        escape_into(&mut out, "a<b>&\"c'\u{1}\té");
        assert_eq!(out, "a&lt;b&gt;&amp;&quot;c&apos;\u{FFFD}\té");
    }

    #[test]
    fn lists_use_member_elements() {
        let mut w = XmlWriter::new();
        w.string_list("Zones", ["a", "b"]);
        w.list("Empty", Vec::<u8>::new(), |_, _| {});
        assert_eq!(
            w.into_string(),
            "<Zones><member>a</member><member>b</member></Zones><Empty></Empty>"
        );
    }

    #[test]
    fn documents_have_result_and_request_id() {
        let doc = response_document("DeleteLoadBalancer", "rid-1", |_| {});
        assert!(doc.contains("<DeleteLoadBalancerResponse xmlns=\""));
        assert!(doc.contains("<DeleteLoadBalancerResult></DeleteLoadBalancerResult>"));
        assert!(doc.contains("<ResponseMetadata><RequestId>rid-1</RequestId></ResponseMetadata>"));
        let err = error_document("Sender", "ValidationError", "bad <x>", "rid-2");
        assert!(err.contains("<Error><Type>Sender</Type><Code>ValidationError</Code><Message>bad &lt;x&gt;</Message></Error><RequestId>rid-2</RequestId>"));
    }
}
