//! What the lists take: filters, sorts and pages, parsed once for both faces.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::{HostStatus, Millis, TaskStatus, UnknownWord};

/// A page request as both faces take it: 1-based, size bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    pub number: u32,
    pub size: u32,
}

/// A page number or size out of bounds; `field` is `page` or `size`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}, got {value}")]
pub struct PageRefused {
    pub field: &'static str,
    pub value: u32,
    pub message: String,
}

impl PageRequest {
    pub const DEFAULT_SIZE: u32 = 10;
    pub const MAX_SIZE: u32 = 2000;
    /// Pages are numbered like OCP's, in a signed 32-bit integer.
    pub const MAX_NUMBER: u32 = i32::MAX as u32;

    /// The paging rules of both faces: an absent number is page 1, an absent size is
    /// 10; present ones must be within bounds, never silently clamped.
    pub fn new(number: Option<u32>, size: Option<u32>) -> Result<PageRequest, PageRefused> {
        let number = number.unwrap_or(1);
        if !(1..=Self::MAX_NUMBER).contains(&number) {
            return Err(PageRefused {
                field: "page",
                value: number,
                message: format!("must be a page number from 1 to {}", Self::MAX_NUMBER),
            });
        }
        let size = size.unwrap_or(Self::DEFAULT_SIZE);
        if !(1..=Self::MAX_SIZE).contains(&size) {
            return Err(PageRefused {
                field: "size",
                value: size,
                message: format!("must be a page size from 1 to {}", Self::MAX_SIZE),
            });
        }
        Ok(PageRequest { number, size })
    }

    pub fn offset(self) -> i64 {
        i64::from(self.number.saturating_sub(1)) * i64::from(self.size)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub contents: Vec<T>,
    pub total_elements: i64,
    pub number: u32,
    pub size: u32,
}

impl<T> Page<T> {
    pub fn total_pages(&self) -> i64 {
        if self.size == 0 {
            return 0;
        }
        (self.total_elements + i64::from(self.size) - 1) / i64::from(self.size)
    }
}

#[derive(Debug, Clone, Default)]
pub struct TaskFilter {
    pub status: Option<TaskStatus>,
    pub name: Option<String>,
    pub host_id: Option<i64>,
    /// Created at or after.
    pub created_from: Option<Millis>,
    /// Created at or before.
    pub created_to: Option<Millis>,
    pub sort: TaskSort,
}

words!(
    /// What a task list is ordered by; OCP's field names.
    TaskSortKey {
        Id = "id",
        StartTime = "startTime",
        FinishTime = "finishTime",
        Name = "name",
        Status = "status",
    }
);

impl TaskSortKey {
    pub fn column(self) -> &'static str {
        match self {
            TaskSortKey::Id => "id",
            TaskSortKey::StartTime => "start_time",
            TaskSortKey::FinishTime => "finish_time",
            TaskSortKey::Name => "name",
            TaskSortKey::Status => "status",
        }
    }
}

/// Newest first unless asked otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskSort {
    pub key: TaskSortKey,
    pub ascending: bool,
}

impl Default for TaskSort {
    fn default() -> Self {
        TaskSort {
            key: TaskSortKey::Id,
            ascending: false,
        }
    }
}

impl FromStr for TaskSort {
    type Err = UnknownWord;

    fn from_str(s: &str) -> Result<TaskSort, UnknownWord> {
        let (key, ascending) = sort_parts(s, TaskSort::default().ascending)?;
        Ok(TaskSort { key, ascending })
    }
}

/// `key` or `key,asc|desc`, as Spring-style OCP clients send `sort`; a bare key sorts
/// in the list's default direction, `default_ascending`.
fn sort_parts<K: FromStr<Err = UnknownWord>>(
    s: &str,
    default_ascending: bool,
) -> Result<(K, bool), UnknownWord> {
    let (key, ascending) = match s.split_once(',') {
        None => (s, default_ascending),
        Some((key, direction)) => match direction.trim().to_ascii_lowercase().as_str() {
            "asc" => (key, true),
            "desc" => (key, false),
            other => {
                return Err(UnknownWord {
                    kind: "sort direction",
                    word: other.to_string(),
                });
            }
        },
    };
    Ok((key.trim().parse()?, ascending))
}

/// Which hosts a host list shows, and in which order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostFilter {
    /// Any of these; all when empty.
    pub statuses: Vec<HostStatus>,
    /// Found in the name or the inner IP address, ASCII letters in either case.
    pub keyword: Option<String>,
    /// Hosts whose agent runs exactly this version, as it last said.
    pub agent_version: Option<String>,
    pub sort: HostSort,
}

words!(
    /// What a host list is ordered by; the names of the host's JSON fields.
    HostSortKey {
        Id = "id",
        Name = "name",
        InnerIpAddress = "innerIpAddress",
        Status = "status",
        CreateTime = "createTime",
        UpdateTime = "updateTime",
    }
);

impl HostSortKey {
    pub fn column(self) -> &'static str {
        match self {
            HostSortKey::Id => "id",
            HostSortKey::Name => "name",
            HostSortKey::InnerIpAddress => "inner_ip_address",
            HostSortKey::Status => "status",
            HostSortKey::CreateTime => "create_time",
            HostSortKey::UpdateTime => "update_time",
        }
    }

    /// Text is ordered by its bytes, so that both stores list hosts alike whatever
    /// PostgreSQL's locale.
    pub fn is_text(self) -> bool {
        matches!(
            self,
            HostSortKey::Name | HostSortKey::InnerIpAddress | HostSortKey::Status
        )
    }
}

/// Oldest host first unless asked otherwise, as the list always was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostSort {
    pub key: HostSortKey,
    pub ascending: bool,
}

impl Default for HostSort {
    fn default() -> Self {
        HostSort {
            key: HostSortKey::Id,
            ascending: true,
        }
    }
}

impl FromStr for HostSort {
    type Err = UnknownWord;

    fn from_str(s: &str) -> Result<HostSort, UnknownWord> {
        let (key, ascending) = sort_parts(s, HostSort::default().ascending)?;
        Ok(HostSort { key, ascending })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paging_defaults_absent_values_and_refuses_out_of_bounds() {
        assert_eq!(
            PageRequest::new(None, None),
            Ok(PageRequest {
                number: 1,
                size: PageRequest::DEFAULT_SIZE
            })
        );
        assert_eq!(
            PageRequest::new(Some(3), Some(2000)),
            Ok(PageRequest {
                number: 3,
                size: 2000
            })
        );
        for (number, size, field) in [
            (Some(0), None, "page"),
            (Some(i32::MAX as u32 + 1), None, "page"),
            (None, Some(0), "size"),
            (None, Some(2001), "size"),
        ] {
            assert_eq!(PageRequest::new(number, size).unwrap_err().field, field);
        }
        assert_eq!(
            PageRequest::new(None, Some(2001)).unwrap_err().to_string(),
            "size: must be a page size from 1 to 2000, got 2001"
        );
    }
}
