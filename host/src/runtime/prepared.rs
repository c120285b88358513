//! A plugin linked against the host, and the action a step calls, looked up in the step's
//! fresh instance.
//!
//! An export's type is a property of the component, the same in every instance of it, so
//! it is checked at the first step that calls the action and trusted afterwards. Checking
//! it at every step, for both actions, cost about a microsecond of each step's sandbox
//! (`cargo bench -p flowmail --bench sandbox`).

use std::sync::atomic::{AtomicBool, Ordering};

use wasmtime::component::{
    Component, ComponentExportIndex, ComponentNamedList, Instance, Lift, Linker, Lower, TypedFunc,
};
use wasmtime::{AsContextMut, Store};

use super::StepState;
use crate::bindings::MailError;
use crate::bindings::MailPluginPre;
use crate::bindings::actions::{Filter, MailboxPage, Receipt};
use crate::bindings::mailbox::{Cursor, SizeCap};
use crate::bindings::types::OutgoingMessage;

/// The interface of the world that the plugin exports, as the component names it.
const ACTIONS: &str = "flowmail:mail/actions@0.2.0";

/// `send-mail`, as the host calls it.
pub type SendMail<'a> = TypedFunc<(&'a str, &'a OutgoingMessage), (Result<Receipt, MailError>,)>;

/// `read-mailbox`, as the host calls it.
pub type ReadMailbox<'a> = TypedFunc<
    (
        &'a str,
        &'a Filter,
        Option<&'a Cursor>,
        u32,
        Option<SizeCap>,
    ),
    (Result<MailboxPage, MailError>,),
>;

/// A plugin linked against the host, with its two actions found once.
pub struct Prepared {
    pre: MailPluginPre<StepState>,
    send_mail: Action,
    read_mailbox: Action,
}

/// One exported action, and whether its type has been found to be the world's.
struct Action {
    index: ComponentExportIndex,
    checked: AtomicBool,
}

impl Prepared {
    /// Links `component` with `linker`, checking that it implements the world: every
    /// import is the host's, and both actions are exported.
    pub fn new(linker: &Linker<StepState>, component: &Component) -> wasmtime::Result<Self> {
        let pre = MailPluginPre::new(linker.instantiate_pre(component)?)?;
        let action = |name: &str| {
            let actions = component.get_export_index(None, ACTIONS);
            actions
                .and_then(|actions| component.get_export_index(Some(&actions), name))
                .map(|index| Action {
                    index,
                    checked: AtomicBool::new(false),
                })
                .ok_or_else(|| wasmtime::format_err!("no export `{name}` in `{ACTIONS}`"))
        };
        Ok(Self {
            send_mail: action("send-mail")?,
            read_mailbox: action("read-mailbox")?,
            pre,
        })
    }

    /// A fresh instance of the plugin in `store`.
    pub async fn instantiate(&self, store: &mut Store<StepState>) -> wasmtime::Result<Instance> {
        self.pre.instance_pre().instantiate_async(store).await
    }

    /// `instance`'s `send-mail`.
    pub fn send_mail<'a>(
        &self,
        store: &mut Store<StepState>,
        instance: &Instance,
    ) -> wasmtime::Result<SendMail<'a>> {
        // SAFETY: `send_mail` is only ever looked up here, always as `SendMail`.
        unsafe { self.send_mail.typed(store, instance) }
    }

    /// `instance`'s `read-mailbox`.
    pub fn read_mailbox<'a>(
        &self,
        store: &mut Store<StepState>,
        instance: &Instance,
    ) -> wasmtime::Result<ReadMailbox<'a>> {
        // SAFETY: `read_mailbox` is only ever looked up here, always as `ReadMailbox`.
        unsafe { self.read_mailbox.typed(store, instance) }
    }
}

impl Action {
    /// The action in `instance`, as a function of type `Params -> Results`.
    ///
    /// # Safety
    ///
    /// Every call on one `Action` must name the same `Params` and `Results`: the first
    /// call that succeeds checks them against the export's type, and later calls rely on
    /// that check.
    unsafe fn typed<Params, Results>(
        &self,
        mut store: impl AsContextMut,
        instance: &Instance,
    ) -> wasmtime::Result<TypedFunc<Params, Results>>
    where
        Params: ComponentNamedList + Lower,
        Results: ComponentNamedList + Lift,
    {
        if !self.checked.load(Ordering::Acquire) {
            let typed = instance.get_typed_func(store, self.index)?;
            self.checked.store(true, Ordering::Release);
            return Ok(typed);
        }
        let func = instance
            .get_func(store.as_context_mut(), self.index)
            .ok_or_else(|| wasmtime::format_err!("the plugin's action is not a function"))?;
        // SAFETY: every instance of a component has the same export types, and a previous
        // call checked this export against `Params -> Results`, which the caller promises
        // are the same types as then.
        Ok(unsafe { TypedFunc::new_unchecked(func) })
    }
}
