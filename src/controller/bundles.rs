//! Trust bundles shared between reconciles: McpServers with the same sources (the common
//! case is none at all, only the Mozilla roots) get the same bundle, built once and held
//! behind an [`Arc`], instead of one ~200 KB copy per reconcile in flight.
//!
//! The key is a SHA-256 over everything the bundle is made of: `includeSystemRoots`, and
//! each input's name and PEM bytes (private CA sources, then the pinned certificate). The
//! names are part of it because warnings name their source. An entry lives
//! [`MAX_AGE_SECS`] (the expiry warnings depend on the time) and at most [`CAPACITY`]
//! are kept, the oldest evicted first.

use std::sync::{Arc, Mutex};

use crate::pki::{BundleError, BundleOptions, CaInput, TrustBundle};

/// Entries kept at most.
pub const CAPACITY: usize = 32;
/// Seconds an entry is reused after it was built.
pub const MAX_AGE_SECS: i64 = 300;

/// A small cache of assembled bundles (see the [module](self) documentation).
#[derive(Default)]
pub struct BundleCache {
    entries: Mutex<Vec<Entry>>,
}

struct Entry {
    key: [u8; 32],
    built_at: i64,
    bundle: Arc<TrustBundle>,
}

/// The cache key of a bundle's ingredients.
fn key(inputs: &[CaInput], pinned: &[CaInput], include_system_roots: bool) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(&[u8::from(include_system_roots)]);
    for (tag, list) in [(b'i', inputs), (b'p', pinned)] {
        for input in list {
            // Lengths first, so that no two different lists hash the same bytes.
            ctx.update(&[tag]);
            ctx.update(&(input.source.len() as u64).to_be_bytes());
            ctx.update(input.source.as_bytes());
            ctx.update(&(input.pem.len() as u64).to_be_bytes());
            ctx.update(&input.pem);
        }
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

impl BundleCache {
    /// The bundle of `inputs` and `pinned` with `opts`: the one built within the last
    /// [`MAX_AGE_SECS`] of `opts.now_unix` from the same ingredients, or a new one
    /// ([`crate::pki::assemble_with_pinned`]). Errors are not cached.
    ///
    /// # Errors
    /// Those of [`crate::pki::assemble_with_pinned`].
    pub fn get_or_build(
        &self,
        inputs: &[CaInput],
        pinned: &[CaInput],
        opts: &BundleOptions,
    ) -> Result<Arc<TrustBundle>, BundleError> {
        let key = key(inputs, pinned, opts.include_system_roots);
        let now = opts.now_unix;
        let fresh = |e: &Entry| now.saturating_sub(e.built_at) < MAX_AGE_SECS && e.built_at <= now;
        {
            let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            entries.retain(fresh);
            if let Some(e) = entries.iter().find(|e| e.key == key) {
                return Ok(e.bundle.clone());
            }
        }
        // Built outside the lock: two reconciles may both build it once, never more.
        let bundle = Arc::new(crate::pki::assemble_with_pinned(inputs, pinned, opts)?);
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = entries.iter().find(|e| e.key == key) {
            return Ok(e.bundle.clone());
        }
        if entries.len() >= CAPACITY {
            entries.remove(0);
        }
        entries.push(Entry {
            key,
            built_at: now,
            bundle: bundle.clone(),
        });
        Ok(bundle)
    }

    /// How many bundles are held.
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether no bundle is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca_pem(cn: &str) -> Vec<u8> {
        let ca = crate::pki::issue::CertificateAuthority::generate(cn, 1_800_000_000, 86_400 * 365)
            .expect("CA");
        ca.cert_pem.into_bytes()
    }

    fn opts(now: i64) -> BundleOptions {
        BundleOptions {
            include_system_roots: true,
            now_unix: now,
        }
    }

    #[test]
    fn same_ingredients_share_one_bundle() {
        let cache = BundleCache::default();
        let t = 1_800_000_100;
        let a = cache.get_or_build(&[], &[], &opts(t)).expect("roots");
        let b = cache.get_or_build(&[], &[], &opts(t + 10)).expect("roots");
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(cache.len(), 1);

        let corp = CaInput::new("ConfigMap a/corp key ca.crt", ca_pem("corp"));
        let c = cache
            .get_or_build(std::slice::from_ref(&corp), &[], &opts(t))
            .expect("corp");
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!(c.private_cas, 1);
        // The same PEM under another name is another entry (its warnings name it).
        let renamed = CaInput::new("ConfigMap b/corp key ca.crt", corp.pem.clone());
        let d = cache.get_or_build(&[renamed], &[], &opts(t)).expect("b");
        assert!(!Arc::ptr_eq(&c, &d));
        assert_eq!(c.sha256, d.sha256);
        // Pinned is not the same as a source, and system roots are part of the key.
        let e = cache
            .get_or_build(&[], std::slice::from_ref(&corp), &opts(t))
            .expect("pinned");
        assert!(!Arc::ptr_eq(&c, &e));
        let no_roots = BundleOptions {
            include_system_roots: false,
            now_unix: t,
        };
        let f = cache
            .get_or_build(std::slice::from_ref(&corp), &[], &no_roots)
            .expect("no roots");
        assert_ne!(f.sha256, c.sha256);
        assert_eq!(cache.len(), 5);
    }

    #[test]
    fn entries_expire_and_are_bounded() {
        let cache = BundleCache::default();
        let t = 1_800_000_100;
        let a = cache.get_or_build(&[], &[], &opts(t)).expect("roots");
        let b = cache
            .get_or_build(&[], &[], &opts(t + MAX_AGE_SECS))
            .expect("roots later");
        assert!(!Arc::ptr_eq(&a, &b), "an old entry is rebuilt");
        assert_eq!(cache.len(), 1);
        for i in 0..CAPACITY + 5 {
            let input = CaInput::new(format!("ConfigMap a/ca-{i} key ca.crt"), ca_pem("x"));
            cache
                .get_or_build(&[input], &[], &opts(t + MAX_AGE_SECS))
                .expect("bundle");
        }
        assert_eq!(cache.len(), CAPACITY);
        // Errors are returned and not kept.
        let bad = CaInput::new("ConfigMap a/bad key ca.crt", b"not a certificate".to_vec());
        let strict = BundleOptions {
            include_system_roots: false,
            now_unix: t + MAX_AGE_SECS,
        };
        assert!(cache.get_or_build(&[bad], &[], &strict).is_err());
        assert_eq!(cache.len(), CAPACITY);
    }
}
