//! Query-string parameters: listing, message pages and truncation.
//!
//! Unknown parameters are ignored, as most HTTP APIs do; a known parameter given twice
//! or with a value out of its range is a `400 invalid_request` naming it in `param`.

use std::borrow::Cow;

use crate::error::ApiError;
use crate::items::ItemId;
use crate::store::{CursorQuery, ListQuery, MessageQuery, Order};
use uuid::Uuid;

/// `after`, `limit` and `order` of an items page (OpenAI's list parameters).
pub(crate) struct ItemsQuery {
    /// The id of the item the page starts after; an id this store never writes is `400`.
    pub(crate) after: Option<ItemId>,
    pub(crate) limit: u32,
    pub(crate) order: Order,
}

/// Default page size of a listing.
pub(crate) const DEFAULT_LIST_LIMIT: u32 = 50;
/// Default page size of a message page.
pub(crate) const DEFAULT_MESSAGE_LIMIT: u32 = 20;
/// Largest page size of either.
pub(crate) const MAX_LIMIT: u32 = 100;

/// The decoded parameters of one query string.
pub(crate) struct QueryParams(Vec<(String, String)>);

impl QueryParams {
    /// Decodes `query` (`application/x-www-form-urlencoded`: `+` is a space).
    pub(crate) fn parse(query: Option<&str>) -> Self {
        let pairs = form_urlencoded::parse(query.unwrap_or("").as_bytes())
            .map(|(name, value)| (name.into_owned(), value.into_owned()))
            .collect();
        Self(pairs)
    }

    /// The value of `name`, if given once; an error if given more than once.
    fn get(&self, name: &'static str) -> Result<Option<&str>, ApiError> {
        let mut values = self.0.iter().filter(|(n, _)| n == name).map(|(_, v)| v);
        let first = values.next();
        if values.next().is_some() {
            return Err(invalid(
                name,
                format!("`{name}` must be given at most once."),
            ));
        }
        Ok(first.map(String::as_str))
    }

    /// `limit` in `1..=100`, or `default` when absent.
    fn limit(&self, default: u32) -> Result<u32, ApiError> {
        let Some(text) = self.get("limit")? else {
            return Ok(default);
        };
        match text.parse::<u32>() {
            Ok(limit) if (1..=MAX_LIMIT).contains(&limit) => Ok(limit),
            _ => Err(invalid(
                "limit",
                format!("`limit` must be an integer from 1 to {MAX_LIMIT}."),
            )),
        }
    }

    /// A non-negative integer that fits the database's 64-bit signed integers.
    fn non_negative(&self, name: &'static str) -> Result<Option<i64>, ApiError> {
        let Some(text) = self.get(name)? else {
            return Ok(None);
        };
        match text.parse::<i64>() {
            Ok(value) if value >= 0 => Ok(Some(value)),
            _ => Err(invalid(
                name,
                format!("`{name}` must be a non-negative integer."),
            )),
        }
    }

    /// The cursor listing, when `after` or `order` is given: `after` a conversation id,
    /// `limit` (default 20, as OpenAI's lists), `order` (default `desc`, newest first)
    /// and `q` (search, as in the offset listing). `offset` belongs to the other listing
    /// and is refused beside them. `None` for the offset listing.
    pub(crate) fn cursor_list(&self) -> Result<Option<CursorQuery>, ApiError> {
        let after = self.get("after")?;
        let order = self.get("order")?;
        if after.is_none() && order.is_none() {
            return Ok(None);
        }
        if self.get("offset")?.is_some() {
            return Err(invalid(
                "offset",
                "`offset` pages the other listing; with `after` or `order`, page by `after`.",
            ));
        }
        let after = match after {
            None => None,
            Some(id) => Some(
                Uuid::try_parse(id)
                    .map_err(|_| invalid("after", "`after` must be the id of a conversation."))?,
            ),
        };
        let order = match order {
            None | Some("desc") => Order::Desc,
            Some("asc") => Order::Asc,
            Some(_) => return Err(invalid("order", "`order` must be `asc` or `desc`.")),
        };
        Ok(Some(CursorQuery {
            after,
            limit: self.limit(DEFAULT_MESSAGE_LIMIT)?,
            order,
            search: self.search()?,
        }))
    }

    /// `q`, the words to search for. A blank `q` searches for nothing: every
    /// conversation is listed.
    fn search(&self) -> Result<Option<String>, ApiError> {
        // NUL separates words like a space: neither backend can search for it.
        Ok(self
            .get("q")?
            .map(|q| q.replace('\0', " "))
            .map(|q| q.trim().to_owned())
            .filter(|q| !q.is_empty()))
    }

    /// `limit`, `offset` and `q` of a listing. A blank `q` lists everything.
    pub(crate) fn list(&self) -> Result<ListQuery, ApiError> {
        let limit = self.limit(DEFAULT_LIST_LIMIT)?;
        let offset = self.non_negative("offset")?.unwrap_or(0).unsigned_abs();
        Ok(ListQuery {
            limit,
            offset,
            search: self.search()?,
        })
    }

    /// `limit`, `after` and `order` of a message page.
    pub(crate) fn messages(&self) -> Result<MessageQuery, ApiError> {
        let limit = self.limit(DEFAULT_MESSAGE_LIMIT)?;
        let after = match self.get("after")? {
            None => None,
            Some(text) => Some(
                text.parse::<i64>()
                    .map_err(|_| invalid("after", "`after` must be an integer sequence number."))?,
            ),
        };
        let order = match self.get("order")? {
            None | Some("asc") => Order::Asc,
            Some("desc") => Order::Desc,
            Some(_) => return Err(invalid("order", "`order` must be `asc` or `desc`.")),
        };
        Ok(MessageQuery {
            after,
            limit,
            order,
        })
    }

    /// `after`, `limit` and `order` of an items page: newest first by default, as
    /// OpenAI's list does. `include` is accepted and changes nothing: no item here has
    /// fields to include.
    pub(crate) fn items(&self) -> Result<ItemsQuery, ApiError> {
        let limit = self.limit(DEFAULT_MESSAGE_LIMIT)?;
        let after = match self.get("after")? {
            None => None,
            Some(text) => Some(text.parse::<ItemId>().map_err(|_| {
                invalid("after", "`after` must be an item id of this conversation.")
            })?),
        };
        let order = match self.get("order")? {
            None | Some("desc") => Order::Desc,
            Some("asc") => Order::Asc,
            Some(_) => return Err(invalid("order", "`order` must be `asc` or `desc`.")),
        };
        Ok(ItemsQuery {
            after,
            limit,
            order,
        })
    }

    /// The required `all=true` of an erasure, which says the caller means every one of
    /// their conversations.
    pub(crate) fn erase_all(&self) -> Result<(), ApiError> {
        match self.get("all")? {
            Some("true") => Ok(()),
            _ => Err(invalid(
                "all",
                "Pass `all=true` to erase every one of your conversations.",
            )),
        }
    }

    /// The required `from_sequence` of a truncation.
    pub(crate) fn truncation_point(&self) -> Result<i64, ApiError> {
        self.non_negative("from_sequence")?.ok_or_else(|| {
            invalid(
                "from_sequence",
                "`from_sequence` is required: the first sequence number to delete.",
            )
        })
    }
}

fn invalid(param: &'static str, message: impl Into<Cow<'static, str>>) -> ApiError {
    ApiError::invalid_request(message).with_param(param)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(query: &str) -> QueryParams {
        QueryParams::parse(Some(query))
    }

    #[test]
    fn listing_defaults_to_the_first_50() {
        let query = QueryParams::parse(None).list().unwrap();
        assert_eq!(
            query,
            ListQuery {
                limit: 50,
                offset: 0,
                search: None
            }
        );
    }

    #[test]
    fn search_text_is_decoded_and_blank_search_is_none() {
        let query = params("q=hello+world%21&limit=100&offset=7")
            .list()
            .unwrap();
        assert_eq!(query.search.as_deref(), Some("hello world!"));
        assert_eq!((query.limit, query.offset), (100, 7));
        assert_eq!(params("q=++").list().unwrap().search, None);
        assert_eq!(
            params("q=a%00b").list().unwrap().search.as_deref(),
            Some("a b")
        );
        assert_eq!(params("q=%00").list().unwrap().search, None);
    }

    #[test]
    fn out_of_range_values_name_their_parameter() {
        for (query, param) in [
            ("limit=0", "limit"),
            ("limit=101", "limit"),
            ("limit=", "limit"),
            ("limit=ten", "limit"),
            ("offset=-1", "offset"),
            ("offset=1.5", "offset"),
            ("offset=99999999999999999999", "offset"),
            ("q=a&q=b", "q"),
        ] {
            let error = params(query).list().unwrap_err();
            assert_eq!(error.param.as_deref(), Some(param), "{query}");
            assert_eq!(error.code, "invalid_request");
        }
        for (query, param) in [
            ("after=x", "after"),
            ("order=sideways", "order"),
            ("limit=1000", "limit"),
        ] {
            let error = params(query).messages().unwrap_err();
            assert_eq!(error.param.as_deref(), Some(param), "{query}");
        }
    }

    #[test]
    fn cursor_pages_take_the_same_search_text_as_the_offset_listing() {
        let query = params("order=asc&q=+hello%00world+")
            .cursor_list()
            .unwrap()
            .unwrap();
        assert_eq!(query.search.as_deref(), Some("hello world"));
        assert_eq!(query.order, Order::Asc);
        let blank = params("after=0190b6a4-6f1e-7cc3-9d5e-2f1f6a0b4c11&q=+").cursor_list();
        assert_eq!(blank.unwrap().unwrap().search, None);
        assert!(
            params("q=word").cursor_list().unwrap().is_none(),
            "offset listing"
        );
    }

    #[test]
    fn message_pages_default_to_20_ascending_from_the_start() {
        let query = QueryParams::parse(None).messages().unwrap();
        assert_eq!(
            query,
            MessageQuery {
                after: None,
                limit: 20,
                order: Order::Asc
            }
        );
        let query = params("after=-1&order=desc&limit=3").messages().unwrap();
        assert_eq!(
            (query.after, query.order, query.limit),
            (Some(-1), Order::Desc, 3)
        );
    }

    #[test]
    fn from_sequence_is_required_and_non_negative() {
        assert_eq!(params("from_sequence=4").truncation_point().unwrap(), 4);
        for query in ["", "from_sequence=-1", "from_sequence=x"] {
            let error = params(query).truncation_point().unwrap_err();
            assert_eq!(error.param.as_deref(), Some("from_sequence"), "{query}");
        }
    }
}
