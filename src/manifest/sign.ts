import { sign, verify, type KeyObject } from 'node:crypto';
import { InputError, IntegrityError } from '../errors.js';
import { parsePublicKey, rawPublicKey, signerFingerprint } from '../keys/signing.js';
import { parseManifest, SIGNATURE_MAGIC, type ParsedManifest } from './schema.js';

/**
 * Optional Ed25519 signatures (layout in schema.ts): a block appended after
 * the GCM tag — "CYS1", the signer's raw public key, and the signature of
 * every byte before the signature itself. Anyone with the public key can
 * check a manifest without the manifest key. Ed25519 is deterministic, so a
 * signed manifest is as reproducible as an unsigned one.
 *
 * A signature can be stripped; a verifier that expects one must ask for it
 * (verifySignature fails on an unsigned manifest).
 */

const SIG_BYTES = 64;

/** Appends a signature. The manifest must parse and be unsigned. */
export function signManifest(bytes: Buffer, privateKey: KeyObject): Buffer {
  const m = parseManifest(bytes);
  if (m.layout.signatureAt !== null) throw new InputError('manifest: already signed');
  if (privateKey.type !== 'private' || privateKey.asymmetricKeyType !== 'ed25519') throw new InputError('signing key: want an Ed25519 private key');
  const signed = Buffer.concat([bytes, Buffer.from(SIGNATURE_MAGIC, 'latin1'), rawPublicKey(privateKey)]);
  return Buffer.concat([signed, sign(null, signed, privateKey)]);
}

/** The fingerprint of the key a manifest claims to be signed by, or null if unsigned. */
export function manifestSigner(m: ParsedManifest): string | null {
  const at = m.layout.signatureAt;
  return at === null ? null : signerFingerprint(m.bytes.subarray(at + 4, at + 36));
}

/**
 * Checks the signature against `publicKey` (a KeyObject or SPKI PEM text).
 * IntegrityError "manifest: bad signature" when it does not hold, "manifest:
 * not signed" when there is none.
 */
export function verifySignature(bytes: Buffer, publicKey: KeyObject | string): ParsedManifest {
  const key = typeof publicKey === 'string' ? parsePublicKey(publicKey, 'public key') : publicKey;
  const m = parseManifest(bytes);
  const at = m.layout.signatureAt;
  if (at === null) throw new IntegrityError('manifest: not signed');
  const claimed = bytes.subarray(at + 4, at + 36);
  const given = rawPublicKey(key);
  if (!claimed.equals(given)) {
    throw new IntegrityError(`manifest: bad signature (signed by key ${signerFingerprint(claimed)}, checked with key ${signerFingerprint(given)})`);
  }
  const sigAt = bytes.length - SIG_BYTES;
  if (!verify(null, bytes.subarray(0, sigAt), key, bytes.subarray(sigAt))) throw new IntegrityError('manifest: bad signature');
  return m;
}
