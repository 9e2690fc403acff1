// The tokenizer as a plain Java library module: no Android classes, Java 8 language and API.
plugins {
    `java-library`
}

java {
    sourceCompatibility = JavaVersion.VERSION_1_8
    targetCompatibility = JavaVersion.VERSION_1_8
}
