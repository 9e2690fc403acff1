package org.keraslmlitert.tokenizer;

import java.io.File;
import java.io.FileInputStream;
import java.io.IOException;
import java.io.OutputStreamWriter;
import java.io.PrintWriter;
import java.nio.charset.StandardCharsets;
import java.util.List;

/**
 * Runs the tokenizer from a shell, for checks on a desktop JVM.
 *
 * <pre>
 * java -cp classes org.keraslmlitert.tokenizer.TokenizerCli encode export.json texts.txt
 *     texts.txt holds UTF-8 texts separated by NUL characters; prints one line of
 *     space-separated ids per text.
 * java -cp classes org.keraslmlitert.tokenizer.TokenizerCli decode export.json ids.txt
 *     ids.txt holds one line of space-separated ids per text; prints the texts,
 *     each followed by a NUL character.
 * </pre>
 */
public final class TokenizerCli {
  private TokenizerCli() {}

  public static void main(String[] args) throws IOException {
    if (args.length != 3 || !(args[0].equals("encode") || args[0].equals("decode"))) {
      System.err.println("usage: TokenizerCli encode|decode <manifest.json> <input file>");
      System.exit(2);
    }
    ExportedTokenizer tokenizer = ExportedTokenizer.load(new File(args[1]));
    String input = LineFiles.readUtf8(new FileInputStream(args[2]));
    PrintWriter out = new PrintWriter(new OutputStreamWriter(System.out, StandardCharsets.UTF_8));
    if (args[0].equals("encode")) {
      for (String text : input.split("\u0000", -1)) {
        int[] ids = tokenizer.encode(text);
        StringBuilder line = new StringBuilder();
        for (int i = 0; i < ids.length; i++) {
          line.append(i == 0 ? "" : " ").append(ids[i]);
        }
        out.print(line);
        out.print('\n');
      }
    } else {
      List<String> lines = LineFiles.lines(input);
      for (String line : lines) {
        String[] fields = line.trim().isEmpty() ? new String[0] : line.trim().split(" ");
        int[] ids = new int[fields.length];
        for (int i = 0; i < ids.length; i++) {
          ids[i] = Integer.parseInt(fields[i]);
        }
        out.print(tokenizer.decode(ids));
        out.print('\u0000');
      }
    }
    out.flush();
  }
}
