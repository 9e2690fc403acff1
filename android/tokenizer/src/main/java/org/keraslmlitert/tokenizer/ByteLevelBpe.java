package org.keraslmlitert.tokenizer;

import java.io.ByteArrayOutputStream;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.PriorityQueue;

/**
 * Byte-level BPE as keras-hub's BytePairTokenizer runs it (through Hugging Face
 * {@code tokenizers}).
 *
 * <p>Special tokens are cut out first (leftmost, longest), and text equal to the split
 * literal is isolated. Each remaining piece is mapped byte by byte to GPT-2's printable
 * characters and merged as one word: the pair of lowest merge rank is merged first, the
 * leftmost on a tie, until no adjacent pair has a rank.
 */
final class ByteLevelBpe implements TokenModel {
  private final String[] tokens;
  private final Map<String, Integer> ids = new HashMap<String, Integer>();
  /** Pair key (left id, right id) to {rank, merged id}. */
  private final Map<Long, int[]> merges = new HashMap<Long, int[]>();
  private final String[] specialTokens;
  private final Map<String, Integer> specialIds = new HashMap<String, Integer>();
  private final String splitLiteral;
  private final boolean addPrefixSpace;
  private final char[] byteToChar = new char[256];
  private final Map<Character, Integer> charToByte = new HashMap<Character, Integer>();

  ByteLevelBpe(List<String> vocabularyLines, List<String> mergeLines, Map<String, Object> options) {
    tokens = new String[vocabularyLines.size()];
    for (int id = 0; id < tokens.length; id++) {
      tokens[id] = LineFiles.unescape(vocabularyLines.get(id));
      ids.put(tokens[id], id);
    }
    for (int rank = 0; rank < mergeLines.size(); rank++) {
      String[] pair = mergeLines.get(rank).split(" ", -1);
      if (pair.length != 2) {
        throw new IllegalArgumentException("Merge line " + (rank + 1) + " is not 'left right'");
      }
      String left = LineFiles.unescape(pair[0]);
      String right = LineFiles.unescape(pair[1]);
      Integer leftId = ids.get(left);
      Integer rightId = ids.get(right);
      Integer mergedId = ids.get(left + right);
      if (leftId == null || rightId == null || mergedId == null) {
        throw new IllegalArgumentException("Merge line " + (rank + 1) + " names a token outside the vocabulary");
      }
      merges.put(pairKey(leftId, rightId), new int[] {rank, mergedId});
    }
    @SuppressWarnings("unchecked")
    List<Object> special = (List<Object>) options.get("special_tokens");
    specialTokens = new String[special.size()];
    for (int i = 0; i < specialTokens.length; i++) {
      specialTokens[i] = (String) special.get(i);
      specialIds.put(specialTokens[i], ids.get(specialTokens[i]));
    }
    splitLiteral = (String) options.get("split_literal");
    addPrefixSpace = (Boolean) options.get("add_prefix_space");
    buildByteMap();
  }

  /** GPT-2's byte-to-character map: printable bytes map to themselves, the rest above U+0100. */
  private void buildByteMap() {
    int next = 0;
    for (int b = 0; b < 256; b++) {
      boolean printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      char c = printable ? (char) b : (char) (256 + next++);
      byteToChar[b] = c;
      charToByte.put(c, b);
    }
  }

  private static long pairKey(int left, int right) {
    return ((long) left << 32) | (right & 0xFFFFFFFFL);
  }

  @Override
  public int vocabularySize() {
    return tokens.length;
  }

  @Override
  public int[] encode(String text) {
    List<Integer> out = new ArrayList<Integer>();
    int position = 0;
    int pieceStart = 0;
    while (position < text.length()) {
      String special = longestSpecialAt(text, position);
      if (special == null) {
        position++;
        continue;
      }
      encodeSegment(text.substring(pieceStart, position), out);
      out.add(specialIds.get(special));
      position += special.length();
      pieceStart = position;
    }
    encodeSegment(text.substring(pieceStart), out);
    int[] result = new int[out.size()];
    for (int i = 0; i < result.length; i++) {
      result[i] = out.get(i);
    }
    return result;
  }

  private String longestSpecialAt(String text, int position) {
    String best = null;
    for (String special : specialTokens) {
      if (text.startsWith(special, position) && (best == null || special.length() > best.length())) {
        best = special;
      }
    }
    return best;
  }

  /** Encodes text between special tokens: isolate the split literal, then merge each piece. */
  private void encodeSegment(String segment, List<Integer> out) {
    int start = 0;
    while (true) {
      int found = segment.indexOf(splitLiteral, start);
      if (found < 0) {
        break;
      }
      encodeWord(segment.substring(start, found), out);
      encodeWord(splitLiteral, out);
      start = found + splitLiteral.length();
    }
    encodeWord(segment.substring(start), out);
  }

  private void encodeWord(String word, List<Integer> out) {
    if (word.isEmpty()) {
      return;
    }
    if (addPrefixSpace && !word.startsWith(" ")) {
      word = " " + word;
    }
    byte[] bytes = word.getBytes(StandardCharsets.UTF_8);
    int n = bytes.length;
    int[] symbol = new int[n];
    int[] previous = new int[n];
    int[] next = new int[n];
    boolean[] removed = new boolean[n];
    int count = 0;
    for (byte b : bytes) {
      Integer id = ids.get(String.valueOf(byteToChar[b & 0xFF]));
      // tokenizers drops a character missing from the vocabulary when there is no unknown token.
      if (id != null) {
        symbol[count] = id;
        previous[count] = count - 1;
        next[count] = count + 1;
        count++;
      }
    }
    if (count == 0) {
      return;
    }
    next[count - 1] = -1;
    // Queue entries are {rank, position, merged id}, lowest rank then leftmost first.
    PriorityQueue<int[]> queue =
        new PriorityQueue<int[]>(
            Math.max(1, count),
            new java.util.Comparator<int[]>() {
              @Override
              public int compare(int[] a, int[] b) {
                return a[0] != b[0] ? Integer.compare(a[0], b[0]) : Integer.compare(a[1], b[1]);
              }
            });
    for (int i = 0; i + 1 < count; i++) {
      offer(queue, i, symbol[i], symbol[i + 1]);
    }
    while (!queue.isEmpty()) {
      int[] top = queue.poll();
      int at = top[1];
      if (removed[at] || next[at] == -1) {
        continue;
      }
      int right = next[at];
      int[] merge = merges.get(pairKey(symbol[at], symbol[right]));
      // A stale entry: the pair at this position changed since it was queued.
      if (merge == null || merge[1] != top[2]) {
        continue;
      }
      symbol[at] = top[2];
      removed[right] = true;
      next[at] = next[right];
      if (next[right] != -1) {
        previous[next[right]] = at;
      }
      if (previous[at] != -1) {
        offer(queue, previous[at], symbol[previous[at]], symbol[at]);
      }
      if (next[at] != -1) {
        offer(queue, at, symbol[at], symbol[next[at]]);
      }
    }
    for (int i = 0; i < count; i++) {
      if (!removed[i]) {
        out.add(symbol[i]);
      }
    }
  }

  private void offer(PriorityQueue<int[]> queue, int position, int left, int right) {
    int[] merge = merges.get(pairKey(left, right));
    if (merge != null) {
      queue.add(new int[] {merge[0], position, merge[1]});
    }
  }

  @Override
  public String decode(int[] ids) {
    ByteArrayOutputStream bytes = new ByteArrayOutputStream();
    for (int id : ids) {
      if (id < 0 || id >= tokens.length) {
        throw new IllegalArgumentException("Token id " + id + " is not in [0, " + tokens.length + ")");
      }
      String token = tokens[id];
      byte[] mapped = new byte[token.length()];
      boolean allMapped = true;
      for (int i = 0; i < token.length(); i++) {
        Integer b = charToByte.get(token.charAt(i));
        if (b == null) {
          allMapped = false;
          break;
        }
        mapped[i] = (byte) (int) b;
      }
      // A token with characters outside the byte map (a special token) is its own text.
      byte[] raw = allMapped ? mapped : token.getBytes(StandardCharsets.UTF_8);
      bytes.write(raw, 0, raw.length);
    }
    return new String(bytes.toByteArray(), StandardCharsets.UTF_8);
  }
}
