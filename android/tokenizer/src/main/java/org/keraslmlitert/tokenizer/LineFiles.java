package org.keraslmlitert.tokenizer;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;

/** Reads the exported line files: UTF-8, one entry per line, escaped tokens. */
final class LineFiles {
  private LineFiles() {}

  /** Reads a whole stream as UTF-8 and closes it. */
  static String readUtf8(InputStream stream) throws IOException {
    try {
      ByteArrayOutputStream buffer = new ByteArrayOutputStream();
      byte[] chunk = new byte[1 << 16];
      int read;
      while ((read = stream.read(chunk)) != -1) {
        buffer.write(chunk, 0, read);
      }
      return new String(buffer.toByteArray(), StandardCharsets.UTF_8);
    } finally {
      stream.close();
    }
  }

  /**
   * Splits a file into lines at line feeds only: tokens may hold other line breaks
   * (U+2028, U+0085), which must not end a line. The final line feed ends the last line.
   */
  static List<String> lines(String content) {
    List<String> lines = new ArrayList<String>();
    int start = 0;
    while (start < content.length()) {
      int end = content.indexOf('\n', start);
      if (end < 0) {
        end = content.length();
      }
      lines.add(content.substring(start, end));
      start = end + 1;
    }
    return lines;
  }

  /** Undoes the exporter's escapes: backslash, tab, line feed, carriage return. */
  static String unescape(String text) {
    if (text.indexOf('\\') < 0) {
      return text;
    }
    StringBuilder out = new StringBuilder(text.length());
    for (int i = 0; i < text.length(); i++) {
      char c = text.charAt(i);
      if (c != '\\') {
        out.append(c);
        continue;
      }
      if (i + 1 >= text.length()) {
        throw new IllegalArgumentException("Dangling backslash in token: " + text);
      }
      char e = text.charAt(++i);
      switch (e) {
        case '\\':
          out.append('\\');
          break;
        case 't':
          out.append('\t');
          break;
        case 'n':
          out.append('\n');
          break;
        case 'r':
          out.append('\r');
          break;
        default:
          throw new IllegalArgumentException("Unknown escape \\" + e + " in token: " + text);
      }
    }
    return out.toString();
  }

  /** Number of bytes of a code point in UTF-8. */
  static int utf8Length(int codePoint) {
    if (codePoint < 0x80) {
      return 1;
    }
    if (codePoint < 0x800) {
      return 2;
    }
    return codePoint < 0x10000 ? 3 : 4;
  }
}
