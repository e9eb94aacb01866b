//! Entity ids: `@name@key`.

use std::fmt;
use std::str::FromStr;

/// The id of an entity: its name (lower case, as the Durable Task SDKs
/// keep it) and a key. Its instance id is `@name@key`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EntityId {
    name: String,
    key: String,
}

/// An instance id that is not an entity id.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("\"{0}\" is not an entity id; entity ids are written @name@key (a name without '@', then any key)")]
pub struct EntityIdError(pub String);

impl EntityId {
    /// The entity `name` (lower-cased) with this key.
    ///
    /// ```
    /// let id = durable_runtime::entity::EntityId::new("Counter", "a");
    /// assert_eq!(id.to_string(), "@counter@a");
    /// ```
    pub fn new(name: impl AsRef<str>, key: impl Into<String>) -> Self {
        EntityId {
            name: name.as_ref().to_lowercase(),
            key: key.into(),
        }
    }

    /// The entity's name (lower case).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The entity's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Whether an instance id is an entity's (`@name@key`).
    pub fn is_entity_instance(instance_id: &str) -> bool {
        instance_id.parse::<EntityId>().is_ok()
    }
}

impl fmt::Display for EntityId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "@{}@{}", self.name, self.key)
    }
}

impl FromStr for EntityId {
    type Err = EntityIdError;

    /// Parses `@name@key`; the name must not be empty.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || EntityIdError(s.to_string());
        let rest = s.strip_prefix('@').ok_or_else(err)?;
        let (name, key) = rest.split_once('@').ok_or_else(err)?;
        if name.is_empty() {
            return Err(err());
        }
        Ok(EntityId::new(name, key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let id: EntityId = "@Counter@a@b".parse().unwrap();
        assert_eq!(id.name(), "counter");
        assert_eq!(id.key(), "a@b");
        assert_eq!(id.to_string(), "@counter@a@b");
        assert!("counter@a".parse::<EntityId>().is_err());
        assert!("@@a".parse::<EntityId>().is_err());
        assert!("@counter".parse::<EntityId>().is_err());
    }
}
