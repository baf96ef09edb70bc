//! SOPS files in team folders: each team's decrypted with its own key only; another
//! team's file fails the team that holds it, naming the file and the reason, and nobody
//! else; without keys the structure is checked and the key it needs reported.

use super::*;
use crate::sops::Keyring;
use serde_json::Value;

const ENCRYPTED: &str = include_str!("../../sops/testdata/multi.yaml");

fn platform_with_keys() -> String {
    PLATFORM.replace(
        "      - {group: \"\", kind: ConfigMap}\n",
        "      - {group: \"\", kind: ConfigMap}\n      - {group: \"\", kind: Secret}\n  decryption:\n    teams: {a: team-a, b: team-b}\n",
    )
}

fn keys() -> Keyring {
    let mut k = Keyring::new();
    k.add("team-a", include_str!("../../sops/testdata/test-key.txt"))
        .unwrap();
    k.add("team-b", include_str!("../../sops/testdata/other-key.txt"))
        .unwrap();
    k
}

fn render_with(files: &Files, decryption: Decryption) -> (DesiredState, Vec<String>) {
    let s = render_decrypting(files, &[], "rev", &NamespaceOwners::new(), decryption, None);
    let d = s.diagnostics.iter().map(|d| d.to_string()).collect();
    (s, d)
}

#[test]
fn each_team_decrypts_its_own_files_and_never_another_teams() {
    let mut f = repo(&[
        ("teams/a/secrets.yaml", ENCRYPTED),
        // Team b holds a copy of team a's file: encrypted for team a's key.
        ("teams/b/stolen.yaml", ENCRYPTED),
    ]);
    f.insert("platform.yaml".into(), platform_with_keys().into_bytes());
    let keys = keys();
    let (s, d) = render_with(&f, Decryption::Keys(&keys));
    assert_eq!(
        d,
        [
            "teams/b/stolen.yaml:1:1: error[sops]: team b: SOPS file: it is encrypted for the key `team-a`, not for `team-b`, the key that decrypts this team's files"
        ]
    );
    let unit = &s.units[&UnitId {
        team: TeamName("a".into()),
        cluster: ClusterName("prod".into()),
    }];
    let tokens: Vec<String> = unit
        .objects
        .iter()
        .filter(|o| o.object.kind() == "Secret")
        .map(|o| {
            o.object.to_value()["data"]["token"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    // stringData, rendered into data as the API server stores it.
    assert_eq!(
        tokens,
        [
            "Zmlyc3QtZG9jdW1lbnQtdG9rZW4=",
            "c2Vjb25kLWRvY3VtZW50LXRva2Vu"
        ]
    );
    assert!(s.failed_teams.contains_key(&TeamName("b".into())));
}

#[test]
fn a_team_without_a_key_or_without_keys_fails_with_the_file() {
    let f = repo(&[("teams/a/secrets.yaml", ENCRYPTED)]);
    let (_, d) = render_with(&f, Decryption::Keys(&keys()));
    assert_eq!(
        d,
        [
            "teams/a/secrets.yaml:1:1: error[sops]: team a: SOPS file, but platform.yaml gives team a no key: add it to spec.decryption.teams"
        ]
    );
    let mut f = repo(&[("teams/a/secrets.yaml", ENCRYPTED)]);
    f.insert("platform.yaml".into(), platform_with_keys().into_bytes());
    let (_, d) = render_with(&f, Decryption::Keys(&NO_KEYS));
    assert_eq!(
        d,
        [
            "teams/a/secrets.yaml:1:1: error[sops]: team a: SOPS file: no key given to decrypt it: the daemon holds no key named `team-a`"
        ]
    );
}

#[test]
fn without_keys_the_structure_is_checked_and_the_key_it_needs_reported() {
    let mut f = repo(&[("teams/a/secrets.yaml", ENCRYPTED)]);
    f.insert("platform.yaml".into(), platform_with_keys().into_bytes());
    let (s, d) = render_with(&f, Decryption::StructureOnly);
    assert_eq!(
        d,
        [
            "teams/a/secrets.yaml:1:1: warning[sops-key]: team a: SOPS file for age recipient age12st0qhlu03jqqveq3q97wgcln847t2t0httdhjwd7rl5964tu5rqss5hph: decrypted with the key `team-a`; not decrypted here, its values not checked"
        ]
    );
    assert!(s.failed_teams.is_empty());
    // Its apiVersion and kind encrypted too: nothing rendered from it.
    assert!(
        s.units
            .values()
            .all(|u| u.objects.iter().all(|o| o.object.kind() != "Secret"))
    );
    // With them plain, its Secrets render with empty values.
    f.insert(
        "teams/a/secrets.yaml".into(),
        include_bytes!("../../sops/testdata/regex.yaml").to_vec(),
    );
    let (s, d) = render_with(&f, Decryption::StructureOnly);
    assert_eq!(d.len(), 1, "{d:?}");
    let unit = s.units.values().next().unwrap();
    let tokens: Vec<Value> = unit
        .objects
        .iter()
        .filter(|o| o.object.kind() == "Secret")
        .map(|o| o.object.to_value()["data"]["token"].clone())
        .collect();
    assert_eq!(
        tokens,
        [json!(""), json!("")],
        "base64 of the empty placeholder"
    );
    // A broken file is an error even without keys.
    let broken = ENCRYPTED.replacen("token: ENC[", "token: ENC[x", 1);
    f.insert("teams/a/secrets.yaml".into(), broken.into_bytes());
    let (_, d) = render_with(&f, Decryption::StructureOnly);
    assert_eq!(d.len(), 1, "{d:?}");
    assert!(
        d[0].starts_with("teams/a/secrets.yaml:1:1: error[sops]: team a: SOPS file: the value at `stringData.token` cannot be decrypted"),
        "{d:?}"
    );
}

#[test]
fn a_diagnostic_never_quotes_a_decrypted_value() {
    // Its namespace, decrypted (`hidden-namespace-value`), is not one of team a's: the
    // error says so without it.
    let mut f = repo(&[(
        "teams/a/leak.yaml",
        include_str!("../../sops/testdata/foreign-namespace.yaml"),
    )]);
    f.insert("platform.yaml".into(), platform_with_keys().into_bytes());
    let keys = keys();
    let (_, d) = render_with(&f, Decryption::Keys(&keys));
    assert_eq!(
        d,
        [
            "teams/a/leak.yaml:5:5: error[namespace-not-owned]: team a: (secret) in namespace (secret), which is not one of the team's namespaces"
        ],
        "its kind was encrypted too, so it goes as well"
    );
}

#[test]
fn a_decrypted_instance_is_read_from_its_values_never_its_encrypted_text() {
    // `metadata.name: 98765`, an integer: refused from the decrypted value. Read again
    // from the file's text it would be the string `ENC[…]`.
    let mut f = repo(&[(
        "teams/a/app.yaml",
        include_str!("../../sops/testdata/instance.yaml"),
    )]);
    f.insert("platform.yaml".into(), platform_with_keys().into_bytes());
    let keys = keys();
    let (s, d) = render_with(&f, Decryption::Keys(&keys));
    assert_eq!(d.len(), 1, "{d:?}");
    assert!(
        d[0].starts_with("teams/a/app.yaml:1:1: error[schema]: team a: "),
        "{d:?}"
    );
    assert!(!d[0].contains("98765") && !d[0].contains("ENC["), "{d:?}");
    assert!(s.failed_teams.contains_key(&TeamName("a".into())));
}

#[test]
fn a_secrets_string_data_renders_into_data_as_the_api_server_stores_it() {
    let mut f = repo(&[(
        "teams/a/s.yaml",
        "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndata: {a: eA==, b: eA==}\nstringData: {b: two, c: three}\n",
    )]);
    f.insert("platform.yaml".into(), platform_with_keys().into_bytes());
    let (s, d) = render_with(&f, Decryption::Keys(&NO_KEYS));
    assert!(d.is_empty(), "{d:?}");
    let unit = s.units.values().next().unwrap();
    let secret = unit
        .objects
        .iter()
        .find(|o| o.object.kind() == "Secret")
        .unwrap()
        .object
        .to_value();
    assert_eq!(
        secret["data"],
        json!({"a": "eA==", "b": "dHdv", "c": "dGhyZWU="})
    );
    assert!(secret.get("stringData").is_none(), "{secret}");
}
