// Vigie's example board: two sensors printed as `topic!value` lines at 9600 baud, twice a second.
//
//   temperature!21.53
//   lumiere!64.2
//
// Vigie reads each line as one reading: the sensor's name, "!", the value (a decimal number).
// Names may use letters, digits, ".", "_" and "-"; one sensor per name, so a second board needs
// other names.
//
// Wiring (an Arduino Uno or Nano, 5 V; no library needed):
//
//   TMP36 temperature sensor, flat side towards you, legs down:
//     left leg   -> 5V
//     middle leg -> A0
//     right leg  -> GND
//
//   Light-dependent resistor (photoresistor) and a 10 kOhm resistor, as a voltage divider:
//     5V -> photoresistor -> A1 -> 10 kOhm -> GND
//     (more light, lower resistance, higher voltage on A1)
//
// On a 3.3 V board (Arduino Due, Zero, most ESP32), power the sensors from 3.3V and set
// VOLTS_AT_FULL_SCALE to 3.3.

const float VOLTS_AT_FULL_SCALE = 5.0;
const unsigned long PERIOD_MS = 500;

void setup() {
  Serial.begin(9600);
}

void loop() {
  // TMP36: 0.5 V at 0 degC, 10 mV per degree.
  float volts = analogRead(A0) * (VOLTS_AT_FULL_SCALE / 1023.0);
  float celsius = (volts - 0.5) * 100.0;
  // Light as a share of full scale, 0 (dark) to 100 (bright).
  float light = analogRead(A1) * (100.0 / 1023.0);

  Serial.print("temperature!");
  Serial.println(celsius, 2);
  Serial.print("lumiere!");
  Serial.println(light, 1);
  delay(PERIOD_MS);
}
