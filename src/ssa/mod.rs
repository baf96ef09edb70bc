//! Judging a live object against what pontoon applies, the way server-side apply sees it,
//! without asking the server: the comparison the sync engine and the drift engine share.
//!
//! An object holds what pontoon applies when every field pontoon sets still has the
//! applied value (`compare`: lists matched by their merge keys, as SSA matches them),
//! no person added a field pontoon never set (`managed_fields`, read from
//! `metadata.managedFields`), and pontoon's own apply owns nothing the manifest no longer
//! sets. Where that cannot be told from the object alone the verdict says so, and the
//! caller asks the server (a dry run) instead:
//! * the object records no server-side apply of pontoon's, so what pontoon owns is
//!   unknown;
//! * pontoon's apply owns fields the manifest does not set (it was applied from another
//!   manifest, and an apply would remove them);
//! * the only differences are values the server may have rewritten itself: a quantity or
//!   number written its own way (`0.5` as `500m`), a zero value an `omitempty` field
//!   drops (`false`, `0`, `""`), a Secret's `stringData` (kept in `data`).
//!
//! Pure: works on objects as JSON; no cluster, no clock, no I/O.

pub mod compare;
pub mod managed_fields;

use serde_json::Value;

use managed_fields::Addition;

/// What the live object is, next to what pontoon applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// An apply would change nothing: every field pontoon sets holds its value, and no
    /// person added one.
    Holds,
    /// It differs: the fields that no longer hold the applied value (`paths`, JSON
    /// pointers into the live object), and the fields people added (`additions`).
    Differs {
        paths: Vec<String>,
        additions: Vec<Addition>,
    },
    /// The object alone cannot tell (why, in a few words): ask the server.
    Undecided(&'static str),
}

/// Judges `live` against `desired` (the manifest pontoon applies). `humans` are the field
/// managers that stand for people; `ignore` are JSON pointers pontoon leaves alone; `ours`
/// is pontoon's own field manager (the daemon's owner's).
pub fn judge(
    desired: &Value,
    live: &Value,
    humans: &[String],
    ignore: &[String],
    ours: &str,
) -> Verdict {
    if !managed_fields::applied_by_pontoon(live, ours) {
        return Verdict::Undecided("the object records no server-side apply of pontoon's");
    }
    let differences = compare::judged_differences(desired, live, ignore);
    let additions = managed_fields::human_additions(desired, live, humans, ignore, ours);
    if differences.iter().any(|d| d.maybe_normalised.is_none()) || !additions.is_empty() {
        return Verdict::Differs {
            paths: differences.into_iter().map(|d| d.path).collect(),
            additions,
        };
    }
    if let Some(why) = differences.iter().find_map(|d| d.maybe_normalised) {
        return Verdict::Undecided(why);
    }
    if !managed_fields::owned_but_not_desired(desired, live, ours).is_empty() {
        return Verdict::Undecided("pontoon's apply owns fields the manifest does not set");
    }
    Verdict::Holds
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn humans() -> Vec<String> {
        managed_fields::HUMAN_MANAGERS
            .iter()
            .map(|m| (*m).to_owned())
            .collect()
    }

    fn live(data: Value, managers: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "data": data,
               "metadata": {"name": "c", "resourceVersion": "7", "managedFields": managers}})
    }

    fn pontoon(fields: Value) -> Value {
        json!({"manager": "pontoon", "operation": "Apply", "fieldsV1": fields})
    }

    #[test]
    fn an_object_as_applied_holds_whatever_others_wrote_beside_it() {
        let desired = json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"a": "1"}});
        let managers = json!([pontoon(json!({"f:data": {"f:a": {}}})),
            {"manager": "some-operator", "operation": "Update", "fieldsV1": {"f:data": {"f:b": {}}}}]);
        let l = live(json!({"a": "1", "b": "2"}), managers);
        assert_eq!(
            judge(&desired, &l, &humans(), &[], "pontoon"),
            Verdict::Holds
        );
    }

    #[test]
    fn a_changed_value_and_a_persons_field_differ() {
        let desired = json!({"data": {"a": "1"}});
        let managers = json!([pontoon(json!({"f:data": {"f:a": {}}})),
            {"manager": "kubectl-edit", "operation": "Update", "fieldsV1": {"f:data": {"f:a": {}, "f:extra": {}}}}]);
        let Verdict::Differs { paths, additions } = judge(
            &desired,
            &live(json!({"a": "9", "extra": "x"}), managers),
            &humans(),
            &[],
            "pontoon",
        ) else {
            panic!("a changed value differs");
        };
        assert_eq!(paths, ["/data/a"]);
        assert_eq!(additions.len(), 1);
        assert_eq!(additions[0].path, "/data/extra");
        assert_eq!(additions[0].manager, "kubectl-edit");
    }

    #[test]
    fn what_the_object_cannot_tell_is_left_to_the_server() {
        let desired = json!({"data": {"a": "1"}});
        // Nobody recorded pontoon's apply.
        let l = live(json!({"a": "1"}), json!([]));
        assert!(matches!(
            judge(&desired, &l, &humans(), &[], "pontoon"),
            Verdict::Undecided(_)
        ));
        // A quantity the server may have written its own way.
        let desired = json!({"spec": {"cpu": "0.5"}});
        let mut l = live(
            json!({}),
            json!([pontoon(json!({"f:spec": {"f:cpu": {}}}))]),
        );
        l["spec"] = json!({"cpu": "500m"});
        assert!(matches!(
            judge(&desired, &l, &humans(), &[], "pontoon"),
            Verdict::Undecided(_)
        ));
        // pontoon's apply set a field this manifest does not.
        let desired = json!({"data": {"a": "1"}});
        let l = live(
            json!({"a": "1", "b": "2"}),
            json!([pontoon(json!({"f:data": {"f:a": {}, "f:b": {}}}))]),
        );
        assert!(matches!(
            judge(&desired, &l, &humans(), &[], "pontoon"),
            Verdict::Undecided(_)
        ));
    }
}
