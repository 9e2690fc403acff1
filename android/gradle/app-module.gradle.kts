// What an app module's build.gradle.kts needs for an export from `make android`.
// A snippet to merge into your own file (Android Gradle Plugin 8.x, Kotlin DSL),
// not a complete build: this repository has no Android SDK to build an app with.

android {
    androidResources {
        // Keep models stored, not deflated: LiteRT then memory-maps the asset
        // (AssetManager.openFd) instead of copying the whole model into the heap.
        noCompress += "tflite"
    }
}

dependencies {
    // org.tensorflow.lite.Interpreter. Any LiteRT release whose runtime is at least the
    // manifest's model.min_runtime_version runs the model.
    implementation("com.google.ai.edge.litert:litert:1.4.1")
    // The tokenizer (android/tokenizer, plain Java 8), e.g. included in settings.gradle.kts
    // with include(":tokenizer"); or copy its source files into the app.
    implementation(project(":tokenizer"))
}
