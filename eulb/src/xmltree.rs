//! Response documents as a small owned element tree, namespaces ignored (as botocore and
//! euca2ools read them), with accessors for the Query protocol's `<X><member>..</member></X>`
//! lists.

/// One element: its local name, its own text (trimmed) and its child elements.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Elem {
    pub name: String,
    pub text: String,
    pub children: Vec<Elem>,
}

impl Elem {
    /// Parses a document and returns its root element.
    pub fn parse(xml: &str) -> Result<Elem, String> {
        let doc = roxmltree::Document::parse(xml).map_err(|e| e.to_string())?;
        Ok(Self::from_node(doc.root_element()))
    }

    fn from_node(node: roxmltree::Node<'_, '_>) -> Elem {
        let mut text = String::new();
        let mut children = Vec::new();
        for child in node.children() {
            if child.is_element() {
                children.push(Self::from_node(child));
            } else if child.is_text() {
                text.push_str(child.text().unwrap_or_default());
            }
        }
        Elem {
            name: node.tag_name().name().to_string(),
            text: text.trim().to_string(),
            children,
        }
    }

    /// The first child named `name`.
    pub fn child(&self, name: &str) -> Option<&Elem> {
        self.children.iter().find(|c| c.name == name)
    }

    /// The element at a `/`-separated path of child names (`""` is `self`).
    pub fn at(&self, path: &str) -> Option<&Elem> {
        path.split('/')
            .filter(|p| !p.is_empty())
            .try_fold(self, |e, name| e.child(name))
    }

    /// The text at `path`, or `""` when the element is absent.
    pub fn text(&self, path: &str) -> String {
        self.at(path).map(|e| e.text.clone()).unwrap_or_default()
    }

    /// The `member` children of the list at `path` (none when absent).
    pub fn members(&self, path: &str) -> Vec<&Elem> {
        self.at(path)
            .map(|list| {
                list.children
                    .iter()
                    .filter(|c| c.name == "member")
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The texts of a list of strings at `path`.
    pub fn member_texts(&self, path: &str) -> Vec<String> {
        self.members(path).iter().map(|m| m.text.clone()).collect()
    }

    /// The first element named `name` in a depth-first walk (self included).
    pub fn find(&self, name: &str) -> Option<&Elem> {
        if self.name == name {
            return Some(self);
        }
        self.children.iter().find_map(|c| c.find(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_navigates() {
        let doc = Elem::parse(
            r#"<R xmlns="http://elasticloadbalancing.amazonaws.com/doc/2012-06-01/">
                 <RResult><Names><member> a </member><member>b</member></Names>
                 <S><T>x &amp; y</T></S></RResult></R>"#,
        )
        .unwrap();
        assert_eq!(doc.name, "R");
        assert_eq!(doc.member_texts("RResult/Names"), vec!["a", "b"]);
        assert_eq!(doc.text("RResult/S/T"), "x & y");
        assert_eq!(doc.text("RResult/Missing"), "");
        assert!(doc.members("RResult/None").is_empty());
        assert_eq!(doc.find("T").map(|t| t.text.as_str()), Some("x & y"));
        assert!(Elem::parse("not xml").is_err());
    }
}
