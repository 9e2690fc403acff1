package org.keraslmlitert.tokenizer;

import java.io.ByteArrayOutputStream;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/**
 * A SentencePiece unigram model without a normalization table, encoding as the
 * {@code sentencepiece} library (0.2.3) does.
 *
 * <p>Encoding finds the best-scoring segmentation with SentencePiece's Viterbi search over
 * the normalized text, in float arithmetic: the best path ending at each character, scanned
 * left to right, pieces from each start shortest first, a later candidate replacing an
 * earlier one only when its score is strictly higher. The vocabulary file holds the scores
 * the encoder uses (user-defined pieces included). Characters no piece covers score
 * {@code unknown_score} and become byte pieces ({@code <0xNN>}) when byte fallback is on,
 * else one unknown id per run.
 */
final class SentencePieceUnigram implements TokenModel {
  static final String SPACE_SYMBOL = "\u2581";

  private static final int NORMAL = 1;
  private static final int UNKNOWN = 2;
  private static final int CONTROL = 3;
  private static final int USER_DEFINED = 4;
  private static final int UNUSED = 5;
  private static final int BYTE = 6;

  /** A node of the piece trie over code points. */
  private static final class TrieNode {
    final Map<Integer, TrieNode> children = new HashMap<Integer, TrieNode>();
    int id = -1;
  }

  private final String[] pieces;
  private final float[] scores;
  private final int[] types;
  private final TrieNode root = new TrieNode();
  private final int[] byteIds = new int[256];
  private final int unknownId;
  private final String unknownSurface;
  private final boolean byteFallback;
  private final boolean addDummyPrefix;
  private final boolean removeExtraWhitespaces;
  private final boolean escapeWhitespaces;
  private final float unknownScore;

  SentencePieceUnigram(List<String> vocabularyLines, Map<String, Object> options) {
    int size = vocabularyLines.size();
    pieces = new String[size];
    scores = new float[size];
    types = new int[size];
    java.util.Arrays.fill(byteIds, -1);
    for (int id = 0; id < size; id++) {
      String[] columns = vocabularyLines.get(id).split("\t", -1);
      if (columns.length != 3) {
        throw new IllegalArgumentException("Vocabulary line " + (id + 1) + " has not 3 columns");
      }
      pieces[id] = LineFiles.unescape(columns[0]);
      scores[id] = Float.parseFloat(columns[1]);
      types[id] = typeOf(columns[2]);
      if (types[id] == NORMAL || types[id] == USER_DEFINED || types[id] == UNUSED) {
        insert(pieces[id], id);
      } else if (types[id] == BYTE) {
        byteIds[Integer.parseInt(pieces[id].substring(3, 5), 16)] = id;
      }
    }
    unknownId = ((Number) options.get("unk_id")).intValue();
    unknownSurface = (String) options.get("unk_surface");
    byteFallback = (Boolean) options.get("byte_fallback");
    addDummyPrefix = (Boolean) options.get("add_dummy_prefix");
    removeExtraWhitespaces = (Boolean) options.get("remove_extra_whitespaces");
    escapeWhitespaces = (Boolean) options.get("escape_whitespaces");
    unknownScore = ((Number) options.get("unknown_score")).floatValue();
  }

  private static int typeOf(String name) {
    if (name.equals("normal")) {
      return NORMAL;
    } else if (name.equals("unknown")) {
      return UNKNOWN;
    } else if (name.equals("control")) {
      return CONTROL;
    } else if (name.equals("user_defined")) {
      return USER_DEFINED;
    } else if (name.equals("unused")) {
      return UNUSED;
    } else if (name.equals("byte")) {
      return BYTE;
    }
    throw new IllegalArgumentException("Unknown piece type " + name);
  }

  private void insert(String piece, int id) {
    TrieNode node = root;
    int i = 0;
    while (i < piece.length()) {
      int codePoint = piece.codePointAt(i);
      TrieNode child = node.children.get(codePoint);
      if (child == null) {
        child = new TrieNode();
        node.children.put(codePoint, child);
      }
      node = child;
      i += Character.charCount(codePoint);
    }
    node.id = id;
  }

  @Override
  public int vocabularySize() {
    return pieces.length;
  }

  /** SentencePiece's normalizer for the identity rule: whitespace handling only. */
  String normalize(String text) {
    int[] input = text.codePoints().toArray();
    int start = 0;
    if (removeExtraWhitespaces) {
      while (start < input.length && input[start] == ' ') {
        start++;
      }
    }
    if (start == input.length) {
      return "";
    }
    String space = escapeWhitespaces ? SPACE_SYMBOL : " ";
    StringBuilder out = new StringBuilder(text.length() + 1);
    if (addDummyPrefix) {
      out.append(space);
    }
    boolean previousIsSpace = removeExtraWhitespaces;
    for (int i = start; i < input.length; i++) {
      int c = input[i];
      if (c == ' ') {
        if (previousIsSpace) {
          continue;
        }
        out.append(space);
        previousIsSpace = removeExtraWhitespaces;
      } else {
        out.appendCodePoint(c);
        previousIsSpace = false;
      }
    }
    if (removeExtraWhitespaces) {
      while (out.length() >= space.length()
          && out.lastIndexOf(space) == out.length() - space.length()) {
        out.setLength(out.length() - space.length());
      }
    }
    return out.toString();
  }

  @Override
  public int[] encode(String text) {
    int[] symbols = normalize(text).codePoints().toArray();
    int n = symbols.length;
    float[] bestScore = new float[n + 1];
    int[] startsAt = new int[n + 1];
    int[] bestId = new int[n + 1];
    java.util.Arrays.fill(startsAt, -1);
    for (int start = 0; start < n; start++) {
      float scoreTillHere = bestScore[start];
      boolean hasSingleCharacter = false;
      TrieNode node = root;
      for (int end = start + 1; end <= n; end++) {
        node = node.children.get(symbols[end - 1]);
        if (node == null) {
          break;
        }
        int id = node.id;
        if (id < 0 || types[id] == UNUSED) {
          continue;
        }
        float candidate = scores[id] + scoreTillHere;
        if (startsAt[end] == -1 || candidate > bestScore[end]) {
          bestScore[end] = candidate;
          startsAt[end] = start;
          bestId[end] = id;
        }
        if (end == start + 1) {
          hasSingleCharacter = true;
        }
      }
      if (!hasSingleCharacter) {
        float candidate = unknownScore + scoreTillHere;
        if (startsAt[start + 1] == -1 || candidate > bestScore[start + 1]) {
          bestScore[start + 1] = candidate;
          startsAt[start + 1] = start;
          bestId[start + 1] = unknownId;
        }
      }
    }
    List<int[]> path = new ArrayList<int[]>();
    for (int end = n; end > 0; end = startsAt[end]) {
      path.add(new int[] {startsAt[end], end, bestId[end]});
    }
    List<Integer> ids = new ArrayList<Integer>();
    boolean previousUnknown = false;
    for (int k = path.size() - 1; k >= 0; k--) {
      int[] step = path.get(k);
      int id = step[2];
      boolean unknown = id == unknownId;
      if (unknown && byteFallback) {
        String surface = new String(symbols, step[0], step[1] - step[0]);
        for (byte b : surface.getBytes(StandardCharsets.UTF_8)) {
          ids.add(byteIds[b & 0xFF]);
        }
      } else if (!(unknown && previousUnknown)) {
        // Without byte fallback a run of unknown characters is one unknown id.
        ids.add(id);
      }
      previousUnknown = unknown;
    }
    int[] result = new int[ids.size()];
    for (int i = 0; i < result.length; i++) {
      result[i] = ids.get(i);
    }
    return result;
  }

  @Override
  public String decode(int[] ids) {
    StringBuilder text = new StringBuilder();
    ByteArrayOutputStream pendingBytes = new ByteArrayOutputStream();
    // Whether the next piece starts the text, where SentencePiece drops the space that
    // add_dummy_prefix put before the first word.
    boolean atStart = true;
    for (int id : ids) {
      if (id < 0 || id >= pieces.length) {
        throw new IllegalArgumentException("Token id " + id + " is not in [0, " + pieces.length + ")");
      }
      if (types[id] == BYTE) {
        pendingBytes.write(Integer.parseInt(pieces[id].substring(3, 5), 16));
        continue;
      }
      flushBytes(pendingBytes, text);
      if (text.length() > 0) {
        atStart = false;
      }
      if (types[id] == CONTROL) {
        continue;
      }
      String piece = pieces[id];
      boolean droppedSpace = false;
      if (atStart && (addDummyPrefix || removeExtraWhitespaces) && piece.startsWith(SPACE_SYMBOL)) {
        piece = piece.substring(SPACE_SYMBOL.length());
        droppedSpace = !removeExtraWhitespaces;
      }
      text.append(types[id] == UNKNOWN ? unknownSurface : piece.replace(SPACE_SYMBOL, " "));
      if (droppedSpace || text.length() > 0) {
        atStart = false;
      }
    }
    flushBytes(pendingBytes, text);
    return text.toString();
  }

  /** Appends UTF-8 bytes as text, one U+FFFD per byte that starts no valid character. */
  private static void flushBytes(ByteArrayOutputStream pending, StringBuilder text) {
    byte[] bytes = pending.toByteArray();
    pending.reset();
    int i = 0;
    while (i < bytes.length) {
      int length = validSequenceLength(bytes, i);
      if (length == 0) {
        text.append('\uFFFD');
        i++;
      } else {
        text.append(new String(bytes, i, length, StandardCharsets.UTF_8));
        i += length;
      }
    }
  }

  /** Length of the well-formed UTF-8 character at {@code i}, or 0. */
  static int validSequenceLength(byte[] bytes, int i) {
    int lead = bytes[i] & 0xFF;
    int length;
    int min;
    if (lead < 0x80) {
      return 1;
    } else if (lead >= 0xC2 && lead <= 0xDF) {
      length = 2;
      min = 0x80;
    } else if (lead >= 0xE0 && lead <= 0xEF) {
      length = 3;
      min = 0x800;
    } else if (lead >= 0xF0 && lead <= 0xF4) {
      length = 4;
      min = 0x10000;
    } else {
      return 0;
    }
    if (i + length > bytes.length) {
      return 0;
    }
    int codePoint = lead & (0xFF >> (length + 1));
    for (int k = 1; k < length; k++) {
      int next = bytes[i + k] & 0xFF;
      if ((next & 0xC0) != 0x80) {
        return 0;
      }
      codePoint = (codePoint << 6) | (next & 0x3F);
    }
    if (codePoint < min || codePoint > 0x10FFFF || (codePoint >= 0xD800 && codePoint <= 0xDFFF)) {
      return 0;
    }
    return length;
  }
}
