//! The folder through the account's connection: reading past a cursor (the look, the
//! size cap, the fetch), single messages, flags and moves.

use std::sync::atomic::Ordering;

use futures_util::TryStreamExt;

use super::Imap;
use super::failure::{Failure, classify};
use super::fetch::{
    fetch_raw, fetch_without_attachments, flag_name, require, sizes, store_flags, uid_set,
};
use super::look::{AHEAD_MESSAGES, search_query, status, status_and_search};
use crate::BoxFuture;
use crate::bindings::MailError;
use crate::bindings::mailbox::{Content, Flag, Oversize, Search, SizeCap};
use crate::caps::mailbox::uid::{UidBatch, UidCursor, UidFolder, UidMessage, within_budget};
use crate::caps::mailbox::{WaitPlan, Wake};

impl UidFolder for Imap {
    fn fetch_after(
        &self,
        after: Option<UidCursor>,
        limit: u32,
        search: Search,
        cap: Option<SizeCap>,
    ) -> BoxFuture<'_, Result<UidBatch, MailError>> {
        let server = self.server();
        let folder = self.folder.clone();
        let (selected, heard) = (self.selected.clone(), self.heard.clone());
        let (saves, seen_next) = (self.saves_searches.clone(), self.seen_next.clone());
        // The sizes come with the search when the trigger had caught up as of the last
        // look, within a batch: the FETCH of the saved result names every message found,
        // and a cursor far behind would have it name thousands beyond the batch.
        let caught_up = after.is_some_and(|c| {
            let seen = seen_next.load(Ordering::SeqCst);
            (seen >> 32) as u32 == c.uid_validity
                && (seen as u32).saturating_sub(1).saturating_sub(c.last_uid) <= limit
        });
        Box::pin(self.with_session(move |session| {
            let (server, folder, search, selected, heard, saves, seen_next) = (
                server.clone(),
                folder.clone(),
                search.clone(),
                selected.clone(),
                heard.clone(),
                saves.clone(),
                seen_next.clone(),
            );
            Box::pin(async move {
                // Past the cursor when it holds for the folder's UIDVALIDITY; from the
                // start when the folder changed.
                let start_for = |validity: u32| match after {
                    Some(c) if c.uid_validity == validity => c.last_uid,
                    _ => 0,
                };
                let with_sizes = caught_up && cap.is_some() && saves.load(Ordering::SeqCst);
                // The messages just past the cursor are read ahead with the sizes.
                let ahead = with_sizes.then(|| {
                    let first = start_for(selected.load(Ordering::SeqCst)).saturating_add(1);
                    first..=first.saturating_add(limit.clamp(1, AHEAD_MESSAGES) - 1)
                });
                let query = |v| search_query(start_for(v), &search);
                let look = match status_and_search(
                    session,
                    &server,
                    &folder,
                    (&selected, &heard, &saves),
                    query,
                    ahead,
                )
                .await
                {
                    Err(refused) if with_sizes && !saves.load(Ordering::SeqCst) => {
                        // A server that names SEARCHRES but refuses it: look as before,
                        // from now on.
                        tracing::info!(
                            "{server} refused a saved search ({}); searching without it",
                            refused.message()
                        );
                        status_and_search(
                            session,
                            &server,
                            &folder,
                            (&selected, &heard, &saves),
                            query,
                            None,
                        )
                        .await?
                    }
                    other => other?,
                };
                let (mailbox, found, listed_with) = (look.mailbox, look.found, look.sizes);
                let mut read_ahead = look.bodies;
                seen_next.store(
                    u64::from(mailbox.uid_validity.unwrap_or_default()) << 32
                        | u64::from(mailbox.uid_next.unwrap_or_default()),
                    Ordering::SeqCst,
                );
                let validity = mailbox.uid_validity.unwrap_or_default();
                let start = start_for(validity);
                let mut uids: Vec<u32> = found.into_iter().filter(|u| *u > start).collect();
                uids.sort_unstable();
                uids.dedup();
                let mut more = uids.len() > limit as usize;
                uids.truncate(limit as usize);
                // Every UID below UIDNEXT as of the SELECT was searched; when nothing was
                // cut off, the batch accounts for all of them, matching or not.
                let highest = uids.last().copied().unwrap_or(start);
                let mut scanned_to = if more {
                    highest
                } else {
                    highest.max(mailbox.uid_next.unwrap_or(1).saturating_sub(1))
                };
                let messages = match cap {
                    None => fetch_raw(session, &server, &uids).await?,
                    Some(cap) => {
                        let mut listed = match listed_with {
                            Some(mut listed) => {
                                listed.retain(|(uid, _, _)| uids.binary_search(uid).is_ok());
                                listed
                            }
                            None => sizes(session, &server, &uids).await?,
                        };
                        listed.sort_by_key(|(uid, _, _)| *uid);
                        listed.dedup_by_key(|(uid, _, _)| *uid);
                        let within = within_budget(listed.iter().map(|(_, size, _)| {
                            match (*size <= cap.max_size, cap.oversize) {
                                (true, _) => *size,
                                (false, Oversize::Skip) => 0,
                                (false, Oversize::WithoutAttachments) => cap.max_size,
                            }
                        }));
                        if within < listed.len() {
                            listed.truncate(within);
                            more = true;
                            scanned_to = listed.last().map_or(start, |(uid, _, _)| *uid);
                        }
                        // Within the cap: whole from the look where it read them ahead,
                        // the others fetched.
                        let mut messages = Vec::new();
                        let mut small = Vec::new();
                        for (uid, size, flags) in &listed {
                            if *size > cap.max_size {
                                continue;
                            }
                            match read_ahead.iter().position(|(u, _)| u == uid) {
                                Some(at) => messages.push(UidMessage {
                                    uid: *uid,
                                    flags: flags.clone(),
                                    size: *size,
                                    data: read_ahead.swap_remove(at).1,
                                    content: Content::Complete,
                                }),
                                None => small.push(*uid),
                            }
                        }
                        messages.extend(fetch_raw(session, &server, &small).await?);
                        for (uid, size, flags) in listed {
                            if size <= cap.max_size {
                                continue;
                            }
                            let (data, content) = match cap.oversize {
                                Oversize::Skip => (Vec::new(), Content::Omitted),
                                Oversize::WithoutAttachments => (
                                    fetch_without_attachments(session, &server, uid, cap.max_size)
                                        .await?,
                                    Content::WithoutAttachments,
                                ),
                            };
                            messages.push(UidMessage {
                                uid,
                                flags,
                                size,
                                data,
                                content,
                            });
                        }
                        messages.sort_by_key(|m| m.uid);
                        messages
                    }
                };
                Ok(UidBatch {
                    uid_validity: validity,
                    messages,
                    more,
                    scanned_to,
                })
            })
        }))
    }

    fn fetch(&self, uid: u32) -> BoxFuture<'_, Result<UidMessage, MailError>> {
        let server = self.server();
        Box::pin(self.with_session(move |session| {
            let server = server.clone();
            Box::pin(async move {
                fetch_raw(session, &server, &[uid])
                    .await?
                    .pop()
                    .ok_or_else(|| Failure::NoMessage(uid).classify(&server))
            })
        }))
    }

    fn set_flags(
        &self,
        uids: Vec<u32>,
        add: Vec<Flag>,
        remove: Vec<Flag>,
    ) -> BoxFuture<'_, Result<(), MailError>> {
        let server = self.server();
        Box::pin(self.with_session(move |session| {
            let (server, uids, add, remove) =
                (server.clone(), uids.clone(), add.clone(), remove.clone());
            Box::pin(async move {
                require(session, &server, &uids).await?;
                for (sign, flags) in [("+", &add), ("-", &remove)] {
                    if flags.is_empty() || uids.is_empty() {
                        continue;
                    }
                    let names: Vec<&str> = flags.iter().map(|f| flag_name(*f)).collect();
                    let change = format!("{sign}FLAGS.SILENT ({})", names.join(" "));
                    store_flags(session, &server, &uids, change).await?;
                }
                Ok(())
            })
        }))
    }

    fn move_to(&self, uids: Vec<u32>, folder: String) -> BoxFuture<'_, Result<(), MailError>> {
        let server = self.server();
        Box::pin(self.with_session(move |session| {
            let (server, uids, folder) = (server.clone(), uids.clone(), folder.clone());
            Box::pin(async move {
                require(session, &server, &uids).await?;
                session
                    .uid_mv(uid_set(&uids), &folder)
                    .await
                    .map_err(|e| classify(&server, &format!("moving to {folder}"), e))
            })
        }))
    }

    fn uid_validity(&self) -> BoxFuture<'_, Result<u32, MailError>> {
        let server = self.server();
        let folder = self.folder.clone();
        let selected = self.selected.clone();
        Box::pin(self.with_session(move |session| {
            let (server, folder, selected) = (server.clone(), folder.clone(), selected.clone());
            Box::pin(async move {
                let mailbox = status(session, &server, &folder, &selected).await?;
                Ok(mailbox.uid_validity.unwrap_or_default())
            })
        }))
    }

    fn count_after(&self, after: Option<UidCursor>) -> BoxFuture<'_, Result<u64, MailError>> {
        let server = self.server();
        let folder = self.folder.clone();
        let selected = self.selected.clone();
        Box::pin(self.with_session(move |session| {
            let (server, folder, selected) = (server.clone(), folder.clone(), selected.clone());
            Box::pin(async move {
                let mailbox = status(session, &server, &folder, &selected).await?;
                let start = match after {
                    Some(c) if Some(c.uid_validity) == mailbox.uid_validity => c.last_uid,
                    _ => 0,
                };
                let uids = session
                    .uid_search(format!("UID {}:*", start.saturating_add(1)))
                    .await
                    .map_err(|e| classify(&server, "UID SEARCH", e))?;
                Ok(uids.into_iter().filter(|u| *u > start).count() as u64)
            })
        }))
    }

    fn delete(&self, uids: Vec<u32>) -> BoxFuture<'_, Result<(), MailError>> {
        let server = self.server();
        Box::pin(self.with_session(move |session| {
            let (server, uids) = (server.clone(), uids.clone());
            Box::pin(async move {
                if uids.is_empty() {
                    return Ok(());
                }
                require(session, &server, &uids).await?;
                store_flags(session, &server, &uids, "+FLAGS.SILENT (\\Deleted)").await?;
                // UID EXPUNGE removes only these messages, not others marked by someone else.
                let _: Vec<_> = session
                    .uid_expunge(uid_set(&uids))
                    .await
                    .map_err(|e| classify(&server, "UID EXPUNGE", e))?
                    .try_collect()
                    .await
                    .map_err(|e| classify(&server, "UID EXPUNGE", e))?;
                Ok(())
            })
        }))
    }

    fn wait_for_change(&self, plan: WaitPlan) -> BoxFuture<'_, Result<Wake, MailError>> {
        Box::pin(self.wait(plan))
    }
}
