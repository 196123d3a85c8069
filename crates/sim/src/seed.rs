//! Filling the source directory: from the original workflow's
//! `sampleUsers.csv`, or with generated users that are the same for the same
//! seed.
//!
//! CSV rows become Graph users the way the workflow's
//! "[util] Upload Sample User to Azure AD" flow created them
//! (reference okta-identity-sources.md §6.5): `companyName` "Okta",
//! `jobTitle` "Azure AD User", `usageLocation` "US", `userPrincipalName` and
//! `mail` = `{email local part}@{domain}`, `mobilePhone` from `cell`,
//! `businessPhones` from `phone`, `streetAddress` = "number name". Empty cells
//! become `null`, as Graph stores no empty strings.
//!
//! The CSV's one blank row (every cell empty except `active=false`) is seeded
//! as what it is: a disabled user with no name, no mail, no
//! userPrincipalName and no department. Real Graph would have refused to
//! create it (displayName, mailNickname and userPrincipalName are required),
//! so no real tenant holds it; it is kept so the 300 rows stay 300 and a test
//! can prove the product never sends it: the department filter drops it, and
//! a mapper without that filter must reject it for its missing
//! userPrincipalName.

use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::SimConfig;
use crate::directory::{Directory, DirectoryError};

/// The department the original workflow syncs (its "Continue If" card).
pub const WORKFLOW_DEPARTMENT: &str = "Okta Workflows";

/// Namespace of the seeded users' ids: `uuid v5(namespace, rowId)`.
const SAMPLE_NAMESPACE_NAME: &str =
    "https://github.com/iamse-blog/workflows-templates/anything-as-a-source-pagination/sampleUsers.csv";

#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error("cannot read the sample users file {path}: {source}; point --seed-csv at sampleUsers.csv")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a readable CSV ({source}); it must be the original workflow's sampleUsers.csv")]
    Csv { path: PathBuf, source: csv::Error },
    #[error("{path} has no column {column:?}; it must have the header of the original workflow's sampleUsers.csv")]
    MissingColumn { path: PathBuf, column: &'static str },
    #[error("{path} line {line}: column {column:?} is {value:?}, expected {expected}")]
    BadValue { path: PathBuf, line: u64, column: &'static str, value: String, expected: &'static str },
    #[error("invalid generator option: {0}")]
    Options(String),
    #[error("the directory refused a seeded user: {0}")]
    Directory(#[from] DirectoryError),
}

/// Seeds `dir` as the flags ask: the CSV first, then the generated users.
/// Both append to what is already there.
pub fn seed_from_config(cfg: &SimConfig, dir: &mut Directory) -> Result<(), SeedError> {
    if let Some(path) = &cfg.seed_csv {
        for user in load_sample_csv(path, &cfg.domain)? {
            dir.insert(user)?;
        }
    }
    if let Some(count) = cfg.generate {
        let opts = GenerateOptions {
            disabled_share: cfg.generate_disabled_share,
            other_dept_share: cfg.generate_other_dept_share,
            non_ascii_share: cfg.generate_non_ascii_share,
            malformed: cfg.generate_malformed,
            ..GenerateOptions::new(count, cfg.rng_seed, &cfg.domain)
        };
        for user in generate_with(&opts)?.users {
            dir.insert(user)?;
        }
    }
    Ok(())
}

/// The columns the mapping reads, by header name.
struct Columns {
    row_id: usize,
    active: usize,
    first_name: usize,
    last_name: usize,
    street_number: usize,
    street_name: usize,
    city: usize,
    state: usize,
    country: usize,
    postcode: usize,
    email: usize,
    phone: usize,
    cell: usize,
    department: usize,
}

impl Columns {
    fn find(path: &Path, headers: &csv::StringRecord) -> Result<Self, SeedError> {
        let col = |column: &'static str| {
            headers
                .iter()
                .position(|h| h == column)
                .ok_or_else(|| SeedError::MissingColumn { path: path.to_owned(), column })
        };
        Ok(Columns {
            row_id: col("rowId")?,
            active: col("active")?,
            first_name: col("first_name")?,
            last_name: col("last_name")?,
            street_number: col("street_number")?,
            street_name: col("street_name")?,
            city: col("city")?,
            state: col("state")?,
            country: col("country")?,
            postcode: col("postcode")?,
            email: col("email")?,
            phone: col("phone")?,
            cell: col("cell")?,
            department: col("department")?,
        })
    }
}

/// Reads the original workflow's `sampleUsers.csv` into Graph users, one per
/// row, in file order. See the module documentation for the mapping.
pub fn load_sample_csv(path: &Path, domain: &str) -> Result<Vec<Value>, SeedError> {
    let file = std::fs::File::open(path).map_err(|source| SeedError::Read { path: path.to_owned(), source })?;
    let csv_err = |source| SeedError::Csv { path: path.to_owned(), source };
    let mut reader = csv::Reader::from_reader(file);
    let cols = Columns::find(path, reader.headers().map_err(csv_err)?)?;
    let namespace = Uuid::new_v5(&Uuid::NAMESPACE_URL, SAMPLE_NAMESPACE_NAME.as_bytes());

    let mut users = Vec::new();
    for record in reader.records() {
        let record = record.map_err(csv_err)?;
        let line = record.position().map_or(0, |p| p.line());
        let cell = |i: usize| record.get(i).unwrap_or_default().trim();
        let bad = |column, value: &str, expected| SeedError::BadValue {
            path: path.to_owned(),
            line,
            column,
            value: value.to_owned(),
            expected,
        };

        let row_id = cell(cols.row_id);
        if row_id.is_empty() {
            return Err(bad("rowId", row_id, "a non-empty Workflows table row id"));
        }
        let active = match cell(cols.active).to_ascii_lowercase().as_str() {
            "true" => true,
            "false" => false,
            other => return Err(bad("active", other, "true or false")),
        };
        let (first, last) = (cell(cols.first_name), cell(cols.last_name));
        let upn = match cell(cols.email).split_once('@') {
            Some((local, _)) if !local.is_empty() => Some(format!("{local}@{domain}")),
            None if !cell(cols.email).is_empty() => Some(format!("{}@{domain}", cell(cols.email))),
            _ => None,
        };
        let phone = cell(cols.phone);
        users.push(json!({
            "id": Uuid::new_v5(&namespace, row_id.as_bytes()).to_string(),
            "accountEnabled": active,
            "userPrincipalName": upn,
            "mail": upn,
            "mailNickname": upn.as_deref().and_then(|u| u.split('@').next()),
            "givenName": non_empty(first),
            "surname": non_empty(last),
            "displayName": non_empty(&join_words(first, last)),
            "department": non_empty(cell(cols.department)),
            "companyName": "Okta",
            "jobTitle": "Azure AD User",
            "usageLocation": "US",
            "mobilePhone": non_empty(cell(cols.cell)),
            "businessPhones": if phone.is_empty() { vec![] } else { vec![phone] },
            "streetAddress": non_empty(&join_words(cell(cols.street_number), cell(cols.street_name))),
            "city": non_empty(cell(cols.city)),
            "state": non_empty(cell(cols.state)),
            "country": non_empty(cell(cols.country)),
            "postalCode": non_empty(cell(cols.postcode)),
            "otherMails": [],
            "userType": "Member",
        }));
    }
    Ok(users)
}

fn non_empty(s: &str) -> Value {
    if s.is_empty() { Value::Null } else { Value::String(s.to_owned()) }
}

fn join_words(a: &str, b: &str) -> String {
    format!("{a} {b}").trim().to_owned()
}

/// What to generate. Shares are fractions in 0..=1.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub count: usize,
    pub rng_seed: u64,
    pub domain: String,
    /// Share of users with `accountEnabled: false`.
    pub disabled_share: f64,
    /// Share of users outside the workflow's department ("Okta Workflows").
    pub other_dept_share: f64,
    /// Share of users with non-ASCII names (é, ø, ü, Chinese, Greek, ...).
    pub non_ascii_share: f64,
    /// How many of the `count` users are deliberately malformed.
    pub malformed: usize,
}

impl GenerateOptions {
    /// 10% disabled, 30% in other departments, 15% non-ASCII names, nothing malformed.
    pub fn new(count: usize, rng_seed: u64, domain: &str) -> Self {
        GenerateOptions {
            count,
            rng_seed,
            domain: domain.to_owned(),
            disabled_share: 0.10,
            other_dept_share: 0.30,
            non_ascii_share: 0.15,
            malformed: 0,
        }
    }
}

/// The ways a generated user can be broken on purpose, so tests can prove the
/// product rejects that one user and carries on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MalformedKind {
    /// `mail` is null.
    MissingMail,
    /// `givenName` is 60 characters (Okta allows 50).
    LongGivenName,
    /// `department` is a JSON number.
    NumericDepartment,
    /// `department` is a JSON array.
    ArrayDepartment,
    /// `id` repeats the previous user's.
    DuplicateId,
    /// `userPrincipalName` (and `mail`) repeat the previous user's.
    DuplicateUserPrincipalName,
    /// `userPrincipalName` is the empty string.
    EmptyUserPrincipalName,
}

impl MalformedKind {
    pub const ALL: [MalformedKind; 7] = [
        MalformedKind::MissingMail,
        MalformedKind::LongGivenName,
        MalformedKind::NumericDepartment,
        MalformedKind::ArrayDepartment,
        MalformedKind::DuplicateId,
        MalformedKind::DuplicateUserPrincipalName,
        MalformedKind::EmptyUserPrincipalName,
    ];
}

/// One planted malformed user: its position in [`Generated::users`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MalformedUser {
    pub index: usize,
    pub kind: MalformedKind,
}

#[derive(Debug, Clone)]
pub struct Generated {
    pub users: Vec<Value>,
    pub malformed: Vec<MalformedUser>,
}

/// `count` generated users with the default shares; the same seed gives the
/// same users.
pub fn generate(count: usize, rng_seed: u64, domain: &str) -> Vec<Value> {
    // The default options are valid, so this cannot fail.
    generate_with(&GenerateOptions::new(count, rng_seed, domain)).map(|g| g.users).unwrap_or_default()
}

/// Generates users as `opts` says. Every user draws the same amount of
/// randomness, so changing a share or the malformed count never changes the
/// other fields of the other users.
///
/// Malformed users sit at evenly spread positions (never the first, so a
/// duplicate always has an original before it), are enabled and in the
/// workflow's department (so they reach the mapper), and cycle through
/// [`MalformedKind::ALL`] in order.
pub fn generate_with(opts: &GenerateOptions) -> Result<Generated, SeedError> {
    for (name, share) in [
        ("disabled share", opts.disabled_share),
        ("other department share", opts.other_dept_share),
        ("non-ASCII share", opts.non_ascii_share),
    ] {
        if !(0.0..=1.0).contains(&share) {
            return Err(SeedError::Options(format!("the {name} must be between 0 and 1, got {share}")));
        }
    }
    if opts.malformed > 0 && opts.malformed >= opts.count {
        return Err(SeedError::Options(format!(
            "{} malformed users need at least {} users in all",
            opts.malformed,
            opts.malformed + 1
        )));
    }

    let mut rng = ChaCha8Rng::seed_from_u64(opts.rng_seed);
    let mut users: Vec<Value> = (0..opts.count).map(|i| one_user(&mut rng, i, opts)).collect();

    let malformed: Vec<MalformedUser> = (0..opts.malformed)
        .map(|k| MalformedUser {
            index: (k + 1) * opts.count / (opts.malformed + 1),
            kind: MalformedKind::ALL[k % MalformedKind::ALL.len()],
        })
        .collect();
    for m in &malformed {
        let previous = users[m.index - 1].clone();
        let user = &mut users[m.index];
        user["accountEnabled"] = json!(true);
        user["department"] = json!(WORKFLOW_DEPARTMENT);
        match m.kind {
            MalformedKind::MissingMail => user["mail"] = Value::Null,
            MalformedKind::LongGivenName => {
                user["givenName"] = json!("Maximiliana-Konstantina-Alexandrina-Wilhelmina-Bartholomea")
            }
            MalformedKind::NumericDepartment => user["department"] = json!(42),
            MalformedKind::ArrayDepartment => user["department"] = json!([WORKFLOW_DEPARTMENT]),
            MalformedKind::DuplicateId => user["id"] = previous["id"].clone(),
            MalformedKind::DuplicateUserPrincipalName => {
                user["userPrincipalName"] = previous["userPrincipalName"].clone();
                user["mail"] = previous["mail"].clone();
            }
            MalformedKind::EmptyUserPrincipalName => user["userPrincipalName"] = json!(""),
        }
    }
    Ok(Generated { users, malformed })
}

const FIRST_NAMES: &[&str] = &[
    "Adele", "Alex", "Ben", "Carla", "Daniel", "Diego", "Emma", "Grace", "Hannah", "Isaac", "Jack", "Julia", "Kevin",
    "Laura", "Liam", "Maya", "Nathan", "Olivia", "Omar", "Priya", "Quinn", "Rosa", "Samuel", "Tara", "Uma", "Victor",
    "Wendy", "Yusuf", "Zara", "Noah",
];
const LAST_NAMES: &[&str] = &[
    "Adams", "Baker", "Campbell", "Davis", "Evans", "Fischer", "Garcia", "Harris", "Ito", "Johnson", "Khan", "Lopez",
    "Martin", "Nguyen", "Okafor", "Patel", "Quinn", "Robinson", "Smith", "Taylor", "Usman", "Vance", "Walker", "Young",
    "Zimmer", "Brown", "Clark", "Lewis", "Moore", "Scott",
];
/// Non-ASCII names, given and family name kept together so each pair is plausible.
const NON_ASCII_NAMES: &[(&str, &str)] = &[
    ("Zoë", "Brontë"),
    ("Søren", "Kierkegård"),
    ("Jürgen", "Müller"),
    ("José", "Núñez"),
    ("François", "Lefèvre"),
    ("Łukasz", "Wróbel"),
    ("Björn", "Åström"),
    ("Ægir", "Þórsson"),
    ("İlkay", "Güneş"),
    ("Chloé", "Dubois"),
    ("伟", "王"),
    ("娜", "李"),
    ("陽翔", "佐藤"),
    ("Αλέξανδρος", "Παπαδόπουλος"),
    ("Дмитрий", "Иванов"),
];
const OTHER_DEPARTMENTS: &[&str] = &["Sales", "Engineering", "Finance", "Marketing", "Support", "Legal", "People"];
const JOB_TITLES: &[&str] = &["Azure AD User", "Engineer", "Analyst", "Manager", "Designer", "Consultant"];
const STREETS: &[&str] = &["Main Street", "Cedar St", "Rue de Rivoli", "Königsallee", "Calle Mayor", "High Street"];
/// (city, state, country, postal code)
const PLACES: &[(&str, &str, &str, &str)] = &[
    ("Seattle", "WA", "United States", "98101"),
    ("Toronto", "Ontario", "Canada", "M5H 2N2"),
    ("Dublin", "Dublin City", "Ireland", "D02 X285"),
    ("München", "Bayern", "Germany", "80331"),
    ("Malmö", "Skåne", "Sweden", "211 20"),
    ("São Paulo", "SP", "Brazil", "01001-000"),
    ("Auckland", "Auckland", "New Zealand", "1010"),
    ("Paris", "Île-de-France", "France", "75001"),
];

fn pick<'a, T>(rng: &mut ChaCha8Rng, from: &'a [T]) -> &'a T {
    &from[rng.random_range(0..from.len())]
}

fn one_user(rng: &mut ChaCha8Rng, i: usize, opts: &GenerateOptions) -> Value {
    // Draw everything up front, in a fixed order (see `generate_with`).
    let id = uuid::Builder::from_random_bytes(rng.random()).into_uuid();
    let non_ascii = rng.random_bool(opts.non_ascii_share);
    let (ascii_first, ascii_last) = (*pick(rng, FIRST_NAMES), *pick(rng, LAST_NAMES));
    let pair = *pick(rng, NON_ASCII_NAMES);
    let disabled = rng.random_bool(opts.disabled_share);
    let other_dept = rng.random_bool(opts.other_dept_share);
    let department = *pick(rng, OTHER_DEPARTMENTS);
    let job = *pick(rng, JOB_TITLES);
    let street = *pick(rng, STREETS);
    let street_number = rng.random_range(1..10_000);
    let (city, state, country, postal) = *pick(rng, PLACES);
    let mobile = rng.random_range(1_000_000..10_000_000);
    let office = rng.random_range(1_000_000..10_000_000);

    let (first, last) = if non_ascii { pair } else { (ascii_first, ascii_last) };
    let local = format!("{}.{}.{i:05}", ascii_fold(first), ascii_fold(last));
    let upn = format!("{local}@{}", opts.domain);
    json!({
        "id": id.to_string(),
        "accountEnabled": !disabled,
        "userPrincipalName": upn,
        "mail": upn,
        "mailNickname": local,
        "givenName": first,
        "surname": last,
        "displayName": format!("{first} {last}"),
        "department": if other_dept { department } else { WORKFLOW_DEPARTMENT },
        "companyName": "Okta",
        "jobTitle": job,
        "usageLocation": "US",
        "mobilePhone": format!("+1 425 {mobile}"),
        "businessPhones": [format!("+1 206 {office}")],
        "streetAddress": format!("{street_number} {street}"),
        "city": city,
        "state": state,
        "country": country,
        "postalCode": postal,
        "otherMails": [],
        "userType": "Member",
    })
}

/// Lower-case ASCII for a userPrincipalName: Latin letters lose their accents,
/// scripts without a simple transliteration give "user".
fn ascii_fold(name: &str) -> String {
    let folded: String = name
        .chars()
        .flat_map(|c| {
            let s: &str = match c {
                'à' | 'á' | 'â' | 'ä' | 'å' | 'ã' | 'Å' | 'Á' | 'À' | 'Ä' => "a",
                'æ' | 'Æ' => "ae",
                'ç' | 'Ç' => "c",
                'è' | 'é' | 'ê' | 'ë' | 'É' | 'È' => "e",
                'ì' | 'í' | 'î' | 'ï' | 'İ' | 'ı' => "i",
                'ł' | 'Ł' => "l",
                'ñ' | 'Ñ' => "n",
                'ò' | 'ó' | 'ô' | 'ö' | 'ø' | 'õ' | 'Ø' | 'Ö' | 'Ó' => "o",
                'ş' | 'ś' | 'Ş' | 'Ś' => "s",
                'ù' | 'ú' | 'û' | 'ü' | 'Ü' | 'Ú' => "u",
                'ý' | 'ÿ' => "y",
                'ð' | 'Ð' => "d",
                'þ' | 'Þ' => "th",
                'ß' => "ss",
                _ => "",
            };
            let plain = c.is_ascii_alphanumeric().then(|| c.to_ascii_lowercase());
            plain.into_iter().chain(s.chars())
        })
        .collect();
    if folded.is_empty() { "user".to_owned() } else { folded }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_users() {
        let a = generate(50, 7, "example.org");
        assert_eq!(a, generate(50, 7, "example.org"));
        assert_ne!(a, generate(50, 8, "example.org"));
    }

    #[test]
    fn shares_are_roughly_honoured() {
        let users = generate(2000, 1, "example.org");
        let disabled = users.iter().filter(|u| u["accountEnabled"] == json!(false)).count();
        let other = users.iter().filter(|u| u["department"] != json!(WORKFLOW_DEPARTMENT)).count();
        let non_ascii = users.iter().filter(|u| !u["displayName"].as_str().unwrap().is_ascii()).count();
        assert!((150..250).contains(&disabled), "{disabled} disabled of 2000");
        assert!((500..700).contains(&other), "{other} in other departments of 2000");
        assert!((200..400).contains(&non_ascii), "{non_ascii} non-ASCII names of 2000");
        assert!(users.iter().all(|u| u["userPrincipalName"].as_str().unwrap().is_ascii()));
    }

    #[test]
    fn malformed_users_are_planted_deterministically_without_disturbing_the_rest() {
        let clean = generate_with(&GenerateOptions::new(70, 3, "example.org")).unwrap();
        let opts = GenerateOptions { malformed: 7, ..GenerateOptions::new(70, 3, "example.org") };
        let dirty = generate_with(&opts).unwrap();
        let kinds: Vec<_> = dirty.malformed.iter().map(|m| m.kind).collect();
        assert_eq!(kinds, MalformedKind::ALL);
        let indexes: Vec<_> = dirty.malformed.iter().map(|m| m.index).collect();
        assert_eq!(indexes, [8, 17, 26, 35, 43, 52, 61]);
        for (i, (c, d)) in clean.users.iter().zip(&dirty.users).enumerate() {
            assert_eq!(c == d, !indexes.contains(&i), "user {i}");
        }
        let u = &dirty.users;
        assert!(u[8]["mail"].is_null());
        assert!(u[17]["givenName"].as_str().unwrap().chars().count() > 50);
        assert!(u[26]["department"].is_number());
        assert!(u[35]["department"].is_array());
        assert_eq!(u[43]["id"], u[42]["id"]);
        assert_eq!(u[52]["userPrincipalName"], u[51]["userPrincipalName"]);
        assert_eq!(u[61]["userPrincipalName"], "");
    }

    #[test]
    fn bad_options_are_refused() {
        let opts = GenerateOptions { disabled_share: 1.5, ..GenerateOptions::new(10, 1, "x") };
        assert!(matches!(generate_with(&opts), Err(SeedError::Options(_))));
        let opts = GenerateOptions { malformed: 10, ..GenerateOptions::new(10, 1, "x") };
        assert!(matches!(generate_with(&opts), Err(SeedError::Options(_))));
    }

    #[test]
    fn names_fold_to_ascii() {
        assert_eq!(ascii_fold("Søren"), "soren");
        assert_eq!(ascii_fold("Þórsson"), "thorsson");
        assert_eq!(ascii_fold("王"), "user");
        assert_eq!(ascii_fold("O'Brien"), "obrien");
    }
}
