//! wit-bindgen output for the Switchyard plugin contract (`wit/plugin.wit`
//! in this crate, a copy of `sdk/wit/plugin.wit` kept identical by a test).
//!
//! The three worlds of the contract (`route-plugin`, `filter-plugin`,
//! `pick-plugin`) all export `lifecycle`. wit-bindgen names the export macro
//! of an interface after the interface, so generating the three worlds in one
//! crate with public export macros would define the lifecycle macro three
//! times. Instead the contract is split into four generated pieces, each
//! exporting a distinct interface:
//!
//! * `lifecycle`: the imports shared by every world (`log`, `clock`, `kv`,
//!   `metrics`) plus the `lifecycle` export;
//! * `route`, `filter`, `pick`: one hook export each.
//!
//! A plugin's export macro expands the `lifecycle` piece plus one hook piece;
//! the component's world is the union of the two, which is exactly the
//! matching world of `plugin.wit`. Imports a plugin does not call are removed
//! when the component is built.
//!
//! Message-shaped WIT types are mapped onto the SDK's own plain types with
//! `with`, so a hook receives its arguments without any conversion.

/// Imports plus the `lifecycle` export.
pub mod lifecycle {
    wit_bindgen::generate!({
        path: "wit",
        inline: "
            package switchyard:sdk;

            world sdk-lifecycle {
                include switchyard:plugin/imports@0.1.0;
                export switchyard:plugin/lifecycle@0.1.0;
            }
        ",
        world: "sdk-lifecycle",
        generate_all,
        pub_export_macro: true,
        export_macro_name: "export",
        default_bindings_module: "$crate::__private::lifecycle",
    });
}

/// The `route` hook export.
pub mod route {
    wit_bindgen::generate!({
        path: "wit",
        inline: "
            package switchyard:sdk;

            world sdk-route {
                export switchyard:plugin/route@0.1.0;
            }
        ",
        world: "sdk-route",
        with: {
            "switchyard:plugin/types@0.1.0/message": crate::Message,
            "switchyard:plugin/types@0.1.0/header": crate::Header,
        },
        generate_all,
        pub_export_macro: true,
        export_macro_name: "export",
        default_bindings_module: "$crate::__private::route",
    });
}

/// The `filter` hook export.
pub mod filter {
    wit_bindgen::generate!({
        path: "wit",
        inline: "
            package switchyard:sdk;

            world sdk-filter {
                export switchyard:plugin/filter@0.1.0;
            }
        ",
        world: "sdk-filter",
        with: {
            "switchyard:plugin/types@0.1.0/message": crate::Message,
            "switchyard:plugin/types@0.1.0/header": crate::Header,
            "switchyard:plugin/types@0.1.0/filter-decision": crate::FilterDecision,
        },
        generate_all,
        pub_export_macro: true,
        export_macro_name: "export",
        default_bindings_module: "$crate::__private::filter",
    });
}

/// The `pick` hook export.
pub mod pick {
    wit_bindgen::generate!({
        path: "wit",
        inline: "
            package switchyard:sdk;

            world sdk-pick {
                export switchyard:plugin/pick@0.1.0;
            }
        ",
        world: "sdk-pick",
        with: {
            "switchyard:plugin/types@0.1.0/message": crate::Message,
            "switchyard:plugin/types@0.1.0/header": crate::Header,
            "switchyard:plugin/types@0.1.0/candidate": crate::Candidate,
        },
        generate_all,
        pub_export_macro: true,
        export_macro_name: "export",
        default_bindings_module: "$crate::__private::pick",
    });
}
