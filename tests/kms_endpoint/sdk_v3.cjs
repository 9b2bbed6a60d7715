// A stock AWS SDK for JavaScript v3 KMS client, pointed at the enclave's KMS endpoint by
// AWS_ENDPOINT_URL_KMS (region and dummy credentials from the environment too).
// Run by tests/kms_endpoint/test_javascript.py; prints one JSON line.
"use strict";
const {
  KMSClient,
  DecryptCommand,
  GenerateDataKeyCommand,
} = require("@aws-sdk/client-kms");

async function main() {
  const [blobBase64, keyId, outsideKeyId] = process.argv.slice(2);
  const kms = new KMSClient({ maxAttempts: 1 });
  const out = {};
  const decrypted = await kms.send(
    new DecryptCommand({ CiphertextBlob: Buffer.from(blobBase64, "base64") }),
  );
  out.decrypt = {
    plaintext: Buffer.from(decrypted.Plaintext).toString("base64"),
    keyId: decrypted.KeyId,
    algorithm: decrypted.EncryptionAlgorithm,
  };
  const dataKey = await kms.send(new GenerateDataKeyCommand({ KeyId: keyId, KeySpec: "AES_256" }));
  const again = await kms.send(new DecryptCommand({ CiphertextBlob: dataKey.CiphertextBlob }));
  out.generateDataKey = {
    plaintextLength: dataKey.Plaintext.length,
    keyId: dataKey.KeyId,
    decryptsToTheSameKey:
      Buffer.compare(Buffer.from(again.Plaintext), Buffer.from(dataKey.Plaintext)) === 0,
  };
  try {
    await kms.send(new GenerateDataKeyCommand({ KeyId: outsideKeyId, KeySpec: "AES_256" }));
    out.outside = { name: "none: the key was used" };
  } catch (error) {
    out.outside = {
      name: error.name,
      message: error.message,
      status: error.$metadata ? error.$metadata.httpStatusCode : null,
    };
  }
  console.log(JSON.stringify(out));
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
