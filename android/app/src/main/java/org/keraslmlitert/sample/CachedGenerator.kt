package org.keraslmlitert.sample

import android.content.Context
import org.json.JSONObject
import org.keraslmlitert.tokenizer.ExportedTokenizer
import org.tensorflow.lite.Interpreter
import java.io.FileInputStream
import java.nio.ByteBuffer
import java.nio.ByteOrder
import java.nio.channels.FileChannel

/**
 * Greedy text generation with a generation model from `make android GENERATE=1`: the prompt
 * is prefilled once, then each new token costs one decode step over the KV caches.
 *
 * [name] is the export's file stem, e.g. "smollm2-135m_dynamic_generate". Its manifest's
 * `model.generation` names the signatures of every context (`prefill_<T>`, `decode`), the
 * cache tensors and their shapes. Every cache is an input and an output of every signature:
 * each step reads the caches the step before wrote, so this keeps two sets of direct buffers
 * and swaps them after each step (the runtime copies inputs in and outputs out; a buffer is
 * never both). Prefill returns the logits after its last token and decode those of its one
 * token, so only `vocab` floats are read per step. tests/android_consumer.py makes the same
 * calls in Python, and the tests check its tokens against the project's own loop.
 */
class CachedGenerator(context: Context, name: String, threads: Int = 2) : AutoCloseable {
    private class CacheContext(
        val positions: Int,
        val decode: String,
        val prefill: Map<Int, String>,
        val cacheBytes: Int,
    )

    private val manifest = JSONObject(context.assets.open("$name.json").bufferedReader().use { it.readText() })
    private val model = manifest.getJSONObject("model")
    private val generation = model.getJSONObject("generation")
    private val vocabularySize = model.getInt("vocabulary_size")
    private val cacheNames = generation.getJSONArray("cache_names").let { a -> List(a.length()) { a.getString(it) } }
    private val stopIds = generation.getJSONArray("stop_token_ids").let { a -> Set(a.length()) { a.getInt(it) } }
    private val contexts = generation.getJSONArray("contexts").let { array ->
        List(array.length()) { i ->
            val entry = array.getJSONObject(i)
            val prefill = entry.getJSONObject("prefill")
            val shape = entry.getJSONArray("cache_shape")
            CacheContext(
                positions = entry.getInt("context"),
                decode = entry.getString("decode"),
                prefill = prefill.keys().asSequence().associate { it.toInt() to prefill.getString(it) },
                cacheBytes = 4 * List(shape.length()) { shape.getInt(it) }.reduce(Int::times),
            )
        }.sortedBy { it.positions }
    }
    private val tokenizer = ExportedTokenizer.load(context.assets.open("$name.json")) { file ->
        context.assets.open(file)
    }
    private val interpreter: Interpreter

    init {
        require(generation.getString("cache_dtype") == "float32") { "This sample keeps float32 caches." }
        // Memory-maps the model; possible only because the asset is stored uncompressed
        // (androidResources.noCompress in build.gradle.kts).
        val buffer = context.assets.openFd(model.getString("file")).use { fd ->
            FileInputStream(fd.fileDescriptor).channel.use { channel ->
                channel.map(FileChannel.MapMode.READ_ONLY, fd.startOffset, fd.declaredLength)
            }
        }
        interpreter = Interpreter(buffer, Interpreter.Options().setNumThreads(threads))
    }

    /** The prompt's continuation: up to [maxNewTokens] tokens, ending early at a stop token. */
    fun generate(prompt: String, maxNewTokens: Int = 32): String {
        val ids = tokenizer.encode(prompt)
        require(ids.isNotEmpty()) { "The prompt has no tokens." }
        require(maxNewTokens >= 1) { "maxNewTokens must be at least 1." }
        val needed = ids.size + maxNewTokens
        val cache = contexts.firstOrNull { it.positions >= needed }
            ?: throw IllegalArgumentException(
                "The prompt (${ids.size} tokens) and $maxNewTokens new tokens need $needed positions; the " +
                    "model holds ${contexts.last().positions}, so at most ${contexts.last().positions - ids.size} " +
                    "new tokens fit."
            )
        var current = cacheNames.associateWith { allocate(cache.cacheBytes) }
        var next = cacheNames.associateWith { allocate(cache.cacheBytes) }
        val logits = allocate(4 * vocabularySize)

        fun step(signature: String, tokens: IntArray, positions: IntArray) {
            val inputs = HashMap<String, Any>(current)
            inputs[generation.getString("tokens")] = arrayOf(tokens)
            inputs[generation.getString("input_pos")] = positions
            val outputs = HashMap<String, Any>(next)
            outputs[generation.getString("logits")] = logits
            (current.values + next.values + logits).forEach { it.rewind() }
            interpreter.runSignature(inputs, outputs, signature)
            val written = next
            next = current
            current = written
        }

        // The prompt in chunks: the shortest prefill that takes what is left, else the longest;
        // a short chunk is padded with id 0 at position 0, which the model leaves out.
        val lengths = cache.prefill.keys.sorted()
        var position = 0
        while (position < ids.size) {
            val left = ids.size - position
            val length = lengths.firstOrNull { it >= left } ?: lengths.last()
            val count = minOf(length, left)
            val tokens = IntArray(length)
            val positions = IntArray(length)
            for (i in 0 until count) {
                tokens[i] = ids[position + i]
                positions[i] = position + i
            }
            step(cache.prefill.getValue(length), tokens, positions)
            position += count
        }
        val generated = ArrayList<Int>()
        while (true) {
            val token = argmax(logits)
            if (token in stopIds) break
            generated += token
            if (generated.size == maxNewTokens) break
            step(cache.decode, intArrayOf(token), intArrayOf(position))
            position += 1
        }
        return tokenizer.decode(generated.toIntArray())
    }

    private fun allocate(bytes: Int): ByteBuffer = ByteBuffer.allocateDirect(bytes).order(ByteOrder.nativeOrder())

    /** Index of the largest logit; the first one on a tie, as numpy. */
    private fun argmax(buffer: ByteBuffer): Int {
        val values = buffer.also { it.rewind() }.asFloatBuffer()
        var best = 0
        for (i in 1 until vocabularySize) {
            if (values.get(i) > values.get(best)) best = i
        }
        return best
    }

    override fun close() = interpreter.close()
}
