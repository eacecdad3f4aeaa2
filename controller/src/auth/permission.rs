//! OCP's permissions, and the sets of them a user holds with the implications applied.

use std::fmt;
use std::str::FromStr;

/// OCP's permissions. A manager permission implies the viewer permission of its domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    HostViewer,
    HostManager,
    TaskViewer,
    TaskManager,
}

impl Permission {
    pub const ALL: [Permission; 4] = [
        Permission::HostViewer,
        Permission::HostManager,
        Permission::TaskViewer,
        Permission::TaskManager,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Permission::HostViewer => "HOST_VIEWER",
            Permission::HostManager => "HOST_MANAGER",
            Permission::TaskViewer => "TASK_VIEWER",
            Permission::TaskManager => "TASK_MANAGER",
        }
    }

    /// The permissions that holding `self` grants, itself included.
    fn grants(self) -> &'static [Permission] {
        match self {
            Permission::HostManager => &[Permission::HostManager, Permission::HostViewer],
            Permission::TaskManager => &[Permission::TaskManager, Permission::TaskViewer],
            Permission::HostViewer => &[Permission::HostViewer],
            Permission::TaskViewer => &[Permission::TaskViewer],
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Permission {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Permission::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown permission {s:?}: use one of HOST_VIEWER, HOST_MANAGER, TASK_VIEWER, TASK_MANAGER"
                )
            })
    }
}

/// A set of permissions with the implications already applied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Permissions(u8);

impl Permissions {
    pub fn all() -> Permissions {
        Permission::ALL.into_iter().collect()
    }

    pub fn contains(self, p: Permission) -> bool {
        self.0 & p.bit() != 0
    }

    /// The permissions held, in the order of [`Permission::ALL`].
    pub fn iter(self) -> impl Iterator<Item = Permission> {
        Permission::ALL
            .into_iter()
            .filter(move |p| self.contains(*p))
    }
}

impl FromIterator<Permission> for Permissions {
    fn from_iter<I: IntoIterator<Item = Permission>>(iter: I) -> Self {
        let mut bits = 0;
        for p in iter {
            for g in p.grants() {
                bits |= g.bit();
            }
        }
        Permissions(bits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn managers_imply_viewers() {
        let p: Permissions = [Permission::HostManager].into_iter().collect();
        assert!(p.contains(Permission::HostViewer));
        assert!(!p.contains(Permission::TaskViewer));
        let t: Permissions = [Permission::TaskManager].into_iter().collect();
        assert!(t.contains(Permission::TaskViewer));
        assert!(!t.contains(Permission::HostViewer));
        assert_eq!(
            p.iter().collect::<Vec<_>>(),
            [Permission::HostViewer, Permission::HostManager]
        );
    }
}
