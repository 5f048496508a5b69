//! The master keys a process holds, and rotating them while the service runs.
//!
//! Every sealed value names the key that sealed it (see
//! `gatehouse_session::MasterKeys`). A rotation puts a new key first, so
//! that it seals from then on, and re-seals every stored value under it;
//! the old keys stay until nothing is sealed with them any more.
//!
//! When the keys live in a file (`GATEHOUSE_MASTER_KEY_FILE`, or the embedded
//! default's own), a node re-reads it whenever its modification time has
//! changed, checked before sealing anything and when a value names a key the
//! node does not have, and once a minute regardless: so `gatehouse
//! master-key rotate` reaches every running node without a restart, nothing
//! it re-sealed is unreadable to them, and no node seals with a key that a
//! rotation has put second (which `prune` may then drop). Sessions
//! are not sealed (refresh tokens are stored as hashes), so none is lost.
//! With the keys in `GATEHOUSE_MASTER_KEY`, each node is restarted with the
//! new key first and the old ones after it, then `master-key reseal` runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use anyhow::Context as _;
use gatehouse_session::{MasterKey, MasterKeyError, MasterKeys};
use gatehouse_store::{SealedColumn, Store};

use crate::config::MasterKeySource;

/// The process's master keys, shared by everything that seals or opens.
pub(crate) struct MasterKeyStore {
    file: Option<PathBuf>,
    current: RwLock<Arc<MasterKeys>>,
    /// The key file's modification time when it was last read.
    file_version: Mutex<Option<std::time::SystemTime>>,
}

impl MasterKeyStore {
    /// Reads the keys (creating the embedded default's key file on first
    /// start).
    pub(crate) fn load(source: &MasterKeySource) -> anyhow::Result<Self> {
        let (file, keys) = match source {
            MasterKeySource::Given(keys) => (None, keys.clone()),
            MasterKeySource::File { path, create } => (Some(path.clone()), read_or_create(path, *create)?),
        };
        let file_version = Mutex::new(file.as_deref().and_then(modified));
        Ok(Self { file, current: RwLock::new(Arc::new(keys)), file_version })
    }

    /// The key file, when the keys come from one.
    pub(crate) fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    pub(crate) fn current(&self) -> Arc<MasterKeys> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Seals with the first key, after re-reading a key file that changed.
    pub(crate) fn seal(&self, context: &str, plaintext: &[u8]) -> String {
        self.refresh();
        self.current().seal(context, plaintext)
    }

    /// Opens `sealed`; a value sealed with a key this process lacks makes it
    /// re-read a key file that changed (another node, or the CLI, rotated).
    pub(crate) fn open(&self, context: &str, sealed: &str) -> Result<Vec<u8>, MasterKeyError> {
        match self.current().open(context, sealed) {
            Err(MasterKeyError::UnknownKey(_)) if self.refresh() => self.current().open(context, sealed),
            other => other,
        }
    }

    /// Re-reads the key file if it changed since it was last read; returns
    /// whether the keys changed.
    pub(crate) fn refresh(&self) -> bool {
        let Some(path) = &self.file else { return false };
        let seen = *self.file_version.lock().unwrap_or_else(|p| p.into_inner());
        if modified(path) == seen {
            return false;
        }
        self.reload().unwrap_or_else(|e| {
            tracing::error!(error = %format!("{e:#}"), "cannot re-read the master key file");
            false
        })
    }

    /// Re-reads the key file, if the keys come from one; returns whether the
    /// keys changed.
    pub(crate) fn reload(&self) -> anyhow::Result<bool> {
        let Some(path) = &self.file else { return Ok(false) };
        let version = modified(path);
        let keys = read_or_create(path, false)?;
        *self.file_version.lock().unwrap_or_else(|p| p.into_inner()) = version;
        let ids = |k: &MasterKeys| k.keys().iter().map(|k| k.id().to_owned()).collect::<Vec<_>>();
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        if ids(&current) == ids(&keys) {
            return Ok(false);
        }
        tracing::info!(sealing = keys.primary().id(), keys = ?ids(&keys), "master keys re-read");
        *current = Arc::new(keys);
        Ok(true)
    }

    /// Puts `key` first in the key file, keeping the others after it, and
    /// starts sealing with it.
    pub(crate) fn add_primary(&self, key: MasterKey) -> anyhow::Result<()> {
        let path = self.file.as_deref().context(
            "the master keys are in GATEHOUSE_MASTER_KEY: put a new key first there on every node (`gatehouse master-key generate` makes one), then run `gatehouse master-key reseal`",
        )?;
        let mut keys = vec![key];
        keys.extend(read_or_create(path, false)?.keys().iter().cloned());
        let keys = MasterKeys::new(keys)?;
        write_keys(path, &keys)?;
        *self.file_version.lock().unwrap_or_else(|p| p.into_inner()) = modified(path);
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(keys);
        Ok(())
    }

    /// Rewrites the key file with only `keep`, in their order.
    pub(crate) fn keep_only(&self, keep: &[String]) -> anyhow::Result<()> {
        let path = self.file.as_deref().context("the master keys are not in a file")?;
        let current = read_or_create(path, false)?;
        let kept: Vec<MasterKey> =
            current.keys().iter().filter(|k| keep.iter().any(|id| id == k.id())).cloned().collect();
        let keys = MasterKeys::new(kept)?;
        write_keys(path, &keys)?;
        *self.file_version.lock().unwrap_or_else(|p| p.into_inner()) = modified(path);
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(keys);
        Ok(())
    }
}

fn modified(path: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn read_or_create(path: &Path, create: bool) -> anyhow::Result<MasterKeys> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            MasterKeys::parse(&text).with_context(|| format!("master key file {} is invalid", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
            let keys = MasterKeys::single(MasterKey::generate());
            write_keys(path, &keys)?;
            tracing::info!(path = %path.display(), "generated a new master key");
            Ok(keys)
        }
        Err(e) => Err(e).with_context(|| format!("cannot read master key file {}", path.display())),
    }
}

/// Writes the key file whole or not at all: a new file only its owner can
/// read, synced, then renamed over the old one.
fn write_keys(path: &Path, keys: &MasterKeys) -> anyhow::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    // A missing directory is made private; one that exists (an operator's
    // choice for GATEHOUSE_MASTER_KEY_FILE) keeps the permissions it has.
    if !dir.exists() {
        crate::create_private_dir(dir)?;
    }
    let temporary = dir.join(format!(
        ".{}.{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("master.key"),
        std::process::id()
    ));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file =
        options.open(&temporary).with_context(|| format!("cannot create {}", temporary.display()))?;
    std::io::Write::write_all(&mut file, keys.to_text().as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&temporary, path).with_context(|| format!("cannot replace {}", path.display()))?;
    Ok(())
}

/// How a key's context is made for each sealed column: the same as where
/// each is sealed.
fn context(column: SealedColumn, row: &str) -> String {
    match column {
        SealedColumn::SigningKeys => row.to_owned(),
        SealedColumn::RestAuth => crate::external_auth::seal_context_for(row),
        SealedColumn::ConnectionSecrets => crate::sso::secret_context(row),
        SealedColumn::SsoFlows => crate::sso::flow_context(row),
    }
}

/// What a re-seal did.
#[derive(Debug, Default)]
pub(crate) struct ResealReport {
    /// Per column: values re-sealed, already under the sealing key.
    pub(crate) columns: Vec<(&'static str, usize, usize)>,
    /// Values that changed while being re-sealed and were left as the new
    /// writer sealed them.
    pub(crate) raced: usize,
}

/// Re-seals every stored value that is not sealed with the first key.
pub(crate) async fn reseal_all(store: &Store, keys: &MasterKeys) -> anyhow::Result<ResealReport> {
    let primary = keys.primary().id().to_owned();
    let mut report = ResealReport::default();
    for column in SealedColumn::ALL {
        let (mut resealed, mut current) = (0, 0);
        for (row, sealed) in store.sealed_values(column).await? {
            if MasterKeys::sealed_with(&sealed) == Some(primary.as_str()) {
                current += 1;
                continue;
            }
            let context = context(column, &row);
            let plain = keys.open(&context, &sealed).with_context(|| {
                format!("cannot open {} {row}: is its master key among the keys?", column.name())
            })?;
            if store.replace_sealed(column, &row, &sealed, &keys.seal(&context, &plain)).await? {
                resealed += 1;
            } else {
                report.raced += 1;
            }
        }
        report.columns.push((column.name(), resealed, current));
    }
    Ok(report)
}

/// How many stored values each master key has sealed (`None`: sealed
/// before values named their key).
pub(crate) async fn sealed_by_key(store: &Store) -> anyhow::Result<BTreeMap<Option<String>, usize>> {
    let mut counts = BTreeMap::new();
    for column in SealedColumn::ALL {
        for (_, sealed) in store.sealed_values(column).await? {
            *counts.entry(MasterKeys::sealed_with(&sealed).map(str::to_owned)).or_insert(0) += 1;
        }
    }
    Ok(counts)
}

/// The `gatehouse master-key` commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MasterKeyAction {
    /// Print a new key.
    Generate,
    /// Key file: put a new key first, then re-seal everything under it.
    Rotate,
    /// Re-seal everything under the first configured key.
    Reseal,
    /// How many values each key has sealed.
    Status,
    /// Key file: drop the keys that no longer seal anything.
    Prune,
}

/// Runs one `gatehouse master-key` command against a bootstrapped service
/// state; returns what to print.
pub async fn run(state: &crate::AppState, action: MasterKeyAction) -> anyhow::Result<String> {
    let keys = state.master_keys();
    let store = state.store();
    match action {
        MasterKeyAction::Generate => Ok(MasterKey::generate().to_base64()),
        MasterKeyAction::Rotate => {
            let key = MasterKey::generate();
            let id = key.id().to_owned();
            keys.add_primary(key)?;
            let report = reseal_all(store, &keys.current()).await?;
            Ok(format!("master key {id} now seals; {}", describe(&report)))
        }
        MasterKeyAction::Reseal => {
            let current = keys.current();
            let report = reseal_all(store, &current).await?;
            Ok(format!("sealing with master key {}; {}", current.primary().id(), describe(&report)))
        }
        MasterKeyAction::Status => {
            let counts = sealed_by_key(store).await?;
            let current = keys.current();
            let mut lines = Vec::new();
            for (i, key) in current.keys().iter().enumerate() {
                let role = if i == 0 { "seals" } else { "opens only" };
                let n = counts.get(&Some(key.id().to_owned())).copied().unwrap_or(0);
                lines.push(format!("{} ({role}): {n} values", key.id()));
            }
            for (id, n) in &counts {
                match id {
                    Some(id) if current.keys().iter().any(|k| k.id() == id) => {}
                    Some(id) => {
                        lines.push(format!("{id} (NOT CONFIGURED): {n} values cannot be opened here"))
                    }
                    None => lines.push(format!("unnamed (sealed before key ids): {n} values")),
                }
            }
            Ok(lines.join("\n"))
        }
        MasterKeyAction::Prune => {
            let counts = sealed_by_key(store).await?;
            anyhow::ensure!(
                !counts.contains_key(&None),
                "some values were sealed before keys had ids; run `gatehouse master-key reseal` first"
            );
            let current = keys.current();
            let keep: Vec<String> = current
                .keys()
                .iter()
                .enumerate()
                .filter(|(i, k)| *i == 0 || counts.contains_key(&Some(k.id().to_owned())))
                .map(|(_, k)| k.id().to_owned())
                .collect();
            let dropped: Vec<&str> =
                current.keys().iter().map(|k| k.id()).filter(|id| !keep.iter().any(|k| k == id)).collect();
            if dropped.is_empty() {
                return Ok("no master key to drop: each one still seals something".into());
            }
            let dropped = dropped.join(", ");
            if keys.file().is_none() {
                return Ok(format!("nothing is sealed with {dropped}: remove it from GATEHOUSE_MASTER_KEY"));
            }
            keys.keep_only(&keep)?;
            Ok(format!("dropped master key {dropped}"))
        }
    }
}

fn describe(report: &ResealReport) -> String {
    let columns: Vec<String> = report
        .columns
        .iter()
        .map(|(name, resealed, current)| format!("{name}: {resealed} re-sealed, {current} already"))
        .collect();
    format!("{}; {} changed meanwhile and were left as written", columns.join("; "), report.raced)
}
