package org.keraslmlitert.sample

import android.content.Context
import org.json.JSONObject
import org.keraslmlitert.tokenizer.ExportedTokenizer
import org.tensorflow.lite.Interpreter
import java.io.FileInputStream
import java.nio.ByteBuffer
import java.nio.ByteOrder
import java.nio.FloatBuffer
import java.nio.channels.FileChannel

/**
 * Greedy text generation with an export from `make android`: the lines an app needs.
 *
 * [name] is the export's file stem, e.g. "tiny-gpt2_int8", whose files are in
 * src/main/assets. The model takes [1, seq_len] token ids and returns [1, seq_len, vocab]
 * float32 logits; the tokens go first, padding after them (attention is causal, so padding
 * never changes earlier positions), and the logits at the last token give the next one.
 * This is what tests/android_consumer.py does in Python, token for token.
 */
class GreedyGenerator(context: Context, name: String, threads: Int = 2) : AutoCloseable {
    private val manifest = JSONObject(context.assets.open("$name.json").bufferedReader().use { it.readText() })
    private val model = manifest.getJSONObject("model")
    private val seqLen = model.getInt("seq_len")
    private val vocabularySize = model.getInt("vocabulary_size")
    private val logits = model.getJSONArray("outputs").getJSONObject(0)
    private val tokenizer = ExportedTokenizer.load(context.assets.open("$name.json")) { file ->
        context.assets.open(file)
    }
    private val padId = tokenizer.padId() ?: 0
    private val interpreter: Interpreter

    init {
        require(logits.getString("dtype") == "float32") { "This sample reads float32 logits." }
        // Memory-maps the model; possible only because the asset is stored uncompressed
        // (androidResources.noCompress in build.gradle.kts).
        val buffer = context.assets.openFd(model.getString("file")).use { fd ->
            FileInputStream(fd.fileDescriptor).channel.use { channel ->
                channel.map(FileChannel.MapMode.READ_ONLY, fd.startOffset, fd.declaredLength)
            }
        }
        interpreter = Interpreter(buffer, Interpreter.Options().setNumThreads(threads))
    }

    /** The prompt's continuation: up to [maxNewTokens] tokens, ending early at end of text. */
    fun generate(prompt: String, maxNewTokens: Int = 32): String {
        val tokens = tokenizer.encode(prompt).toMutableList()
        require(tokens.isNotEmpty()) { "The prompt has no tokens." }
        val input = Array(1) { IntArray(seqLen) }
        val output = ByteBuffer.allocateDirect(4 * seqLen * vocabularySize).order(ByteOrder.nativeOrder())
        val generated = ArrayList<Int>()
        for (step in 0 until maxNewTokens) {
            val window = tokens.takeLast(seqLen)
            input[0].fill(padId)
            window.forEachIndexed { i, id -> input[0][i] = id }
            output.rewind()
            interpreter.runSignature(
                mapOf("token_ids" to input), mapOf(logits.getString("name") to output),
                model.getString("signature_key"),
            )
            output.rewind()
            val next = argmax(output.asFloatBuffer(), (window.size - 1) * vocabularySize, vocabularySize)
            if (next == tokenizer.eosId()) break
            tokens += next
            generated += next
        }
        return tokenizer.decode(generated.toIntArray())
    }

    /** Index of the largest of [count] values from [offset]; the first one on a tie, as numpy. */
    private fun argmax(values: FloatBuffer, offset: Int, count: Int): Int {
        var best = 0
        for (i in 1 until count) {
            if (values.get(offset + i) > values.get(offset + best)) best = i
        }
        return best
    }

    override fun close() = interpreter.close()
}
