package org.keraslmlitert.tokenizer;

import java.io.File;
import java.io.FileInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.util.Collections;
import java.util.List;
import java.util.Map;

/**
 * The tokenizer of a keras-lm-litert Android export, read from the exported files.
 *
 * <p>It gives the same token ids as the keras-hub tokenizer it was exported from, with no
 * dependency beyond the Java 8 standard library (no Android classes), so the same code runs
 * in an app and on a desktop JVM.
 *
 * <pre>{@code
 * // Android: the files are app assets.
 * ExportedTokenizer tokenizer = ExportedTokenizer.load(
 *     getAssets().open("tiny-gpt2_int8.json"), name -> getAssets().open(name));
 * int[] ids = tokenizer.encode("def main():");
 * String text = tokenizer.decode(ids);
 * }</pre>
 *
 * <p>Instances are immutable and safe to share between threads.
 */
public final class ExportedTokenizer {
  /** Opens one exported file by its name (an asset, a file in a folder, a resource). */
  public interface FileOpener {
    InputStream open(String fileName) throws IOException;
  }

  private final TokenModel model;
  private final String type;
  private final Integer bosId;
  private final Integer eosId;
  private final Integer padId;
  private final Integer unknownId;

  private ExportedTokenizer(TokenModel model, String type, Map<String, Object> specialIds) {
    this.model = model;
    this.type = type;
    this.bosId = idOrNull(specialIds, "bos");
    this.eosId = idOrNull(specialIds, "eos");
    this.padId = idOrNull(specialIds, "pad");
    this.unknownId = idOrNull(specialIds, "unk");
  }

  private static Integer idOrNull(Map<String, Object> ids, String key) {
    Object value = ids == null ? null : ids.get(key);
    return value == null ? null : ((Number) value).intValue();
  }

  /** Loads the tokenizer of the export whose manifest is {@code manifestFile}. */
  public static ExportedTokenizer load(File manifestFile) throws IOException {
    final File folder = manifestFile.getAbsoluteFile().getParentFile();
    return load(
        new FileInputStream(manifestFile),
        new FileOpener() {
          @Override
          public InputStream open(String fileName) throws IOException {
            return new FileInputStream(new File(folder, fileName));
          }
        });
  }

  /**
   * Loads a tokenizer from a manifest stream; its files are opened through {@code opener}.
   *
   * @param manifest the export's {@code <name>.json}; closed when read.
   * @param opener opens the vocabulary and merges files the manifest names.
   * @throws IOException a file cannot be read.
   * @throws IllegalArgumentException the manifest or a file is malformed.
   */
  @SuppressWarnings("unchecked")
  public static ExportedTokenizer load(InputStream manifest, FileOpener opener) throws IOException {
    Map<String, Object> root = (Map<String, Object>) Json.parse(LineFiles.readUtf8(manifest));
    Map<String, Object> spec = (Map<String, Object>) root.get("tokenizer");
    if (spec == null) {
      throw new IllegalArgumentException("The manifest has no 'tokenizer' section");
    }
    String type = (String) spec.get("type");
    List<String> vocabulary =
        LineFiles.lines(LineFiles.readUtf8(opener.open((String) spec.get("vocabulary_file"))));
    int expectedSize = ((Number) spec.get("vocabulary_size")).intValue();
    if (vocabulary.size() != expectedSize) {
      throw new IllegalArgumentException(
          "The vocabulary file has " + vocabulary.size() + " lines, the manifest says " + expectedSize);
    }
    TokenModel model;
    if ("sentencepiece_unigram".equals(type)) {
      model = new SentencePieceUnigram(vocabulary, (Map<String, Object>) spec.get("sentencepiece"));
    } else if ("byte_level_bpe".equals(type)) {
      List<String> merges =
          LineFiles.lines(LineFiles.readUtf8(opener.open((String) spec.get("merges_file"))));
      model = new ByteLevelBpe(vocabulary, merges, (Map<String, Object>) spec.get("byte_level_bpe"));
    } else {
      throw new IllegalArgumentException(
          "Unknown tokenizer type '" + type + "': this reader knows sentencepiece_unigram and byte_level_bpe");
    }
    Map<String, Object> special = (Map<String, Object>) root.get("special_token_ids");
    return new ExportedTokenizer(model, type, special == null ? Collections.<String, Object>emptyMap() : special);
  }

  /** Token ids of a text, as the keras-hub tokenizer gives them (no BOS/EOS added). */
  public int[] encode(String text) {
    return model.encode(text);
  }

  /** The text of token ids, as keras-hub's {@code detokenize} gives it. */
  public String decode(int[] ids) {
    return model.decode(ids);
  }

  /** The number of token ids; every id is in {@code [0, vocabularySize())}. */
  public int vocabularySize() {
    return model.vocabularySize();
  }

  /** {@code sentencepiece_unigram} or {@code byte_level_bpe}. */
  public String type() {
    return type;
  }

  /** Beginning-of-text id, or null when the tokenizer has none. */
  public Integer bosId() {
    return bosId;
  }

  /** End-of-text id, or null when the tokenizer has none. */
  public Integer eosId() {
    return eosId;
  }

  /** Padding id, or null when the tokenizer has none. */
  public Integer padId() {
    return padId;
  }

  /** Unknown-token id, or null when the tokenizer has none. */
  public Integer unknownId() {
    return unknownId;
  }
}
