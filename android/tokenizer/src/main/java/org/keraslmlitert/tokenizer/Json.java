package org.keraslmlitert.tokenizer;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * A small JSON reader for the export manifest, so that the tokenizer needs no library.
 *
 * <p>Objects become {@code Map<String, Object>}, arrays {@code List<Object>}, numbers
 * {@code Long} when they have no fraction or exponent and {@code Double} otherwise, and
 * {@code true}, {@code false}, {@code null} their Java values.
 */
final class Json {
  private final String text;
  private int position;

  private Json(String text) {
    this.text = text;
  }

  /** Parses one JSON document; anything after it but whitespace is an error. */
  static Object parse(String text) {
    Json reader = new Json(text);
    Object value = reader.value();
    reader.skipWhitespace();
    if (reader.position != text.length()) {
      throw reader.error("unexpected text after the document");
    }
    return value;
  }

  private IllegalArgumentException error(String message) {
    return new IllegalArgumentException("Bad JSON at character " + position + ": " + message);
  }

  private void skipWhitespace() {
    while (position < text.length()) {
      char c = text.charAt(position);
      if (c != ' ' && c != '\t' && c != '\n' && c != '\r') {
        return;
      }
      position++;
    }
  }

  private char peek() {
    skipWhitespace();
    if (position >= text.length()) {
      throw error("unexpected end");
    }
    return text.charAt(position);
  }

  private void expect(char c) {
    if (peek() != c) {
      throw error("expected '" + c + "'");
    }
    position++;
  }

  private Object value() {
    char c = peek();
    switch (c) {
      case '{':
        return object();
      case '[':
        return array();
      case '"':
        return string();
      case 't':
        return literal("true", Boolean.TRUE);
      case 'f':
        return literal("false", Boolean.FALSE);
      case 'n':
        return literal("null", null);
      default:
        return number();
    }
  }

  private Object literal(String word, Object result) {
    if (!text.startsWith(word, position)) {
      throw error("expected " + word);
    }
    position += word.length();
    return result;
  }

  private Map<String, Object> object() {
    Map<String, Object> result = new LinkedHashMap<String, Object>();
    expect('{');
    if (peek() == '}') {
      position++;
      return result;
    }
    while (true) {
      if (peek() != '"') {
        throw error("expected a key");
      }
      String key = string();
      expect(':');
      result.put(key, value());
      char c = peek();
      position++;
      if (c == '}') {
        return result;
      }
      if (c != ',') {
        throw error("expected ',' or '}'");
      }
    }
  }

  private List<Object> array() {
    List<Object> result = new ArrayList<Object>();
    expect('[');
    if (peek() == ']') {
      position++;
      return result;
    }
    while (true) {
      result.add(value());
      char c = peek();
      position++;
      if (c == ']') {
        return result;
      }
      if (c != ',') {
        throw error("expected ',' or ']'");
      }
    }
  }

  private String string() {
    expect('"');
    StringBuilder out = new StringBuilder();
    while (true) {
      if (position >= text.length()) {
        throw error("unterminated string");
      }
      char c = text.charAt(position++);
      if (c == '"') {
        return out.toString();
      }
      if (c != '\\') {
        out.append(c);
        continue;
      }
      if (position >= text.length()) {
        throw error("unterminated escape");
      }
      char e = text.charAt(position++);
      switch (e) {
        case '"':
        case '\\':
        case '/':
          out.append(e);
          break;
        case 'b':
          out.append('\b');
          break;
        case 'f':
          out.append('\f');
          break;
        case 'n':
          out.append('\n');
          break;
        case 'r':
          out.append('\r');
          break;
        case 't':
          out.append('\t');
          break;
        case 'u':
          if (position + 4 > text.length()) {
            throw error("short \\u escape");
          }
          // Surrogate pairs arrive as two escapes and join in the UTF-16 string.
          out.append((char) Integer.parseInt(text.substring(position, position + 4), 16));
          position += 4;
          break;
        default:
          throw error("unknown escape \\" + e);
      }
    }
  }

  private Object number() {
    int start = position;
    boolean integral = true;
    while (position < text.length()) {
      char c = text.charAt(position);
      if (c == '.' || c == 'e' || c == 'E') {
        integral = false;
      } else if (!(c == '-' || c == '+' || (c >= '0' && c <= '9'))) {
        break;
      }
      position++;
    }
    String token = text.substring(start, position);
    if (token.isEmpty()) {
      throw error("unexpected character");
    }
    try {
      if (integral) {
        return Long.valueOf(token);
      }
      return Double.valueOf(token);
    } catch (NumberFormatException e) {
      throw error("bad number " + token);
    }
  }
}
