package org.keraslmlitert.tokenizer;

/** One tokenizer family: text to ids and back. */
interface TokenModel {
  int[] encode(String text);

  String decode(int[] ids);

  int vocabularySize();
}
