//! Who may do what: repository patterns, and the role bindings, team memberships and
//! anonymous-read flags of the state machine, held in memory so that a request's check never
//! reads the disk.

use std::collections::{BTreeSet, HashMap};

use super::model::{Action, Binding, Role, Scope};

pub use super::model::check_pattern;

/// Whether `pattern` matches `name`.
pub fn matches(pattern: &str, name: &str) -> bool {
    if let Some(base) = pattern.strip_suffix("/**") {
        if glob(base.as_bytes(), name.as_bytes()) {
            return true;
        }
    }
    glob(pattern.as_bytes(), name.as_bytes())
}

fn glob(pattern: &[u8], name: &[u8]) -> bool {
    match pattern {
        [] => name.is_empty(),
        [b'*', b'*', rest @ ..] => (0..=name.len()).any(|i| glob(rest, &name[i..])),
        [b'*', rest @ ..] => {
            let segment = name.iter().position(|&b| b == b'/').unwrap_or(name.len());
            (0..=segment).any(|i| glob(rest, &name[i..]))
        }
        [c, rest @ ..] => name.first() == Some(c) && glob(rest, &name[1..]),
    }
}

/// The authorization state of the region, as of one state-machine generation.
#[derive(Debug, Default, Clone)]
pub struct Policy {
    bindings: Vec<Binding>,
    /// Account name → the teams it is a member of.
    teams_of: HashMap<String, Vec<String>>,
    public: BTreeSet<String>,
}

impl Policy {
    pub fn new(
        bindings: Vec<Binding>,
        teams: impl IntoIterator<Item = (String, Vec<String>)>,
        public: BTreeSet<String>,
    ) -> Self {
        let mut teams_of: HashMap<String, Vec<String>> = HashMap::new();
        for (team, members) in teams {
            for member in members {
                teams_of.entry(member).or_default().push(team.clone());
            }
        }
        Self {
            bindings,
            teams_of,
            public,
        }
    }

    pub fn anonymous_read(&self, repo: &str) -> bool {
        self.public.contains(repo)
    }

    /// The bindings that apply to `principal` (`user:alice`), directly or through a team.
    pub fn bindings_of<'p>(&'p self, principal: &str) -> Vec<&'p Binding> {
        let name = principal.split_once(':').map_or("", |(_, name)| name);
        let teams: Vec<String> = self
            .teams_of
            .get(name)
            .map(|teams| teams.iter().map(|t| format!("team:{t}")).collect())
            .unwrap_or_default();
        self.bindings
            .iter()
            .filter(|b| b.principal == principal || teams.contains(&b.principal))
            .collect()
    }

    pub fn is_cluster_admin(&self, principal: &str) -> bool {
        self.bindings_of(principal)
            .iter()
            .any(|b| b.role == Role::ClusterAdmin)
    }

    /// Whether the principal's roles allow `action` on `repo`.
    pub fn role_allows(&self, principal: &str, repo: &str, action: Action) -> bool {
        self.bindings_of(principal).iter().any(|b| {
            b.role == Role::ClusterAdmin || (b.role.grants(action) && matches(&b.pattern, repo))
        })
    }
}

/// Whether a token's scopes allow `action` on `repo` (`None`: not a scoped credential).
pub fn scopes_allow(scopes: Option<&[Scope]>, repo: &str, action: Action) -> bool {
    match scopes {
        None => true,
        Some(scopes) => scopes.iter().any(|s| {
            s.role == Role::ClusterAdmin || (s.role.grants(action) && matches(&s.pattern, repo))
        }),
    }
}

/// Whether a token's scopes include cluster administration.
pub fn scopes_allow_cluster(scopes: Option<&[Scope]>) -> bool {
    scopes.is_none_or(|scopes| scopes.iter().any(|s| s.role == Role::ClusterAdmin))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_names_and_segments() {
        assert!(matches("builds", "builds"));
        assert!(!matches("builds", "builds2"));
        assert!(matches("builds/**", "builds"));
        assert!(matches("builds/**", "builds/app/x"));
        assert!(!matches("builds/**", "buildsx"));
        assert!(matches("*", "anything"));
        assert!(!matches("*", "a/b"));
        assert!(matches("**", "a/b"));
        assert!(matches("team-*", "team-web"));
        assert!(!matches("team-*", "other"));
        assert!(check_pattern("builds/**").is_ok());
        assert!(check_pattern("").is_err());
        assert!(check_pattern("a b").is_err());
        assert!(check_pattern("a$").is_err());
    }

    fn binding(principal: &str, pattern: &str, role: Role) -> Binding {
        Binding {
            principal: principal.into(),
            pattern: pattern.into(),
            role,
            created_at_ms: 0,
        }
    }

    #[test]
    fn roles_come_from_the_principal_and_its_teams() {
        let policy = Policy::new(
            vec![
                binding("user:alice", "builds", Role::Write),
                binding("team:ops", "prod-*", Role::Delete),
                binding("user:root", "*", Role::ClusterAdmin),
            ],
            [("ops".to_string(), vec!["alice".to_string()])],
            BTreeSet::from(["public".to_string()]),
        );
        assert!(policy.role_allows("user:alice", "builds", Action::Write));
        assert!(policy.role_allows("user:alice", "builds", Action::Read));
        assert!(!policy.role_allows("user:alice", "builds", Action::Delete));
        assert!(policy.role_allows("user:alice", "prod-eu", Action::Delete));
        assert!(!policy.role_allows("user:alice", "prod-eu", Action::Write));
        assert!(!policy.role_allows("user:bob", "builds", Action::Read));
        assert!(!policy.role_allows("service:alice", "builds", Action::Read));
        assert!(policy.role_allows("user:root", "anything", Action::Admin));
        assert!(policy.is_cluster_admin("user:root"));
        assert!(!policy.is_cluster_admin("user:alice"));
        assert!(policy.anonymous_read("public"));
        assert!(!policy.anonymous_read("builds"));
        let scopes = [Scope::parse("builds/**:read").expect("scope")];
        assert!(scopes_allow(Some(&scopes), "builds", Action::Read));
        assert!(!scopes_allow(Some(&scopes), "builds", Action::Write));
        assert!(!scopes_allow(Some(&scopes), "other", Action::Read));
        assert!(!scopes_allow_cluster(Some(&scopes)));
    }
}
